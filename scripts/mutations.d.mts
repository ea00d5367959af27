/** Types of scripts/mutations.mjs, for the check that keeps the list true to the code. */
export interface Mutation {
  /** What `--only` matches. */
  id: string;
  /** The rule the mutation breaks. */
  why: string;
  /** The file under src/ it changes. */
  file: string;
  /** Text found exactly once in that file, and what replaces it. */
  find: string;
  replace: string;
  /** The test files to run against it. */
  tests: string[];
  /** When set, only the tests whose name matches it run (vitest's `-t`). */
  name?: string;
}
export declare const mutations: Mutation[];
