/**
 * The deploy recipes of scripts/deploy/, checked without a cluster, a systemd or a pm2 daemon
 * (the pm2 recipe also runs under a real pm2 in pm2.test.ts):
 *
 *   - every object of every YAML file against an allow-list of the fields its kind has in the
 *     Kubernetes API, with their types, so that a misspelt field (which `kubectl apply` may
 *     drop with a warning) or a wrong type fails here;
 *   - the "restricted" Pod Security Standard, as the PodSecurity admission checks it;
 *   - the numbers that must agree: the grace period against preStop + drain budget + margin,
 *     the probes' paths, ports and thresholds, the selectors of the Service, the
 *     PodDisruptionBudget and the spread against the pods' labels, the environment against
 *     wsdrain's own option parser;
 *   - the systemd unit's sections and keys, and its stop timeout against the budget;
 *   - the pm2 file: it loads, its options are pm2's (pm2's own schema), kill_timeout is above
 *     the budget and treekill is off.
 *
 * Plain files and arithmetic: no process is started.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { envName, kDefaultOptions, OPTION_DEFS, resolveOptions } from 'wsdrain/internal';
import { parseAllDocuments } from 'yaml';
import { ROOT } from './helpers/process.js';

const DEPLOY = join(ROOT, 'scripts', 'deploy');
/** What every recipe grants beyond the drain budget before SIGKILL, in seconds (the docs say 5). */
const MARGIN_S = 5;
/** wsdrain's own worker start timeout (kDefaultTimings.startTimeout of the primary), in ms. */
const WORKER_START_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// A compact schema language: the fields an object may have, each with its type.

type Schema =
  | { t: 'string' | 'int' | 'bool' | 'quantity' | 'intOrString' }
  | { t: 'enum'; of: readonly string[] }
  | { t: 'list' | 'map'; of: Schema }
  | { t: 'object'; fields: Readonly<Record<string, Schema>>; required: readonly string[] };

const str: Schema = { t: 'string' };
const int: Schema = { t: 'int' };
const bool: Schema = { t: 'bool' };
/** A resource quantity: "2", "500m", "1Gi", 2. */
const quantity: Schema = { t: 'quantity' };
/** A port number or name, or a count or percentage ("25%"). */
const intOrString: Schema = { t: 'intOrString' };
const oneOf = (...of: string[]): Schema => ({ t: 'enum', of });
const list = (of: Schema): Schema => ({ t: 'list', of });
const map = (of: Schema): Schema => ({ t: 'map', of });
/** An object; a field name ending in `!` is required (the `!` is not part of the name). */
function obj(fields: Record<string, Schema>): Schema {
  const out: Record<string, Schema> = {};
  const required: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    const name = k.endsWith('!') ? k.slice(0, -1) : k;
    if (name !== k) required.push(name);
    out[name] = v;
  }
  return { t: 'object', fields: out, required };
}

/** Kubernetes' quantity grammar: a decimal number with an optional SI, binary or e suffix. */
const QUANTITY = /^[+-]?(\d+(\.\d*)?|\.\d+)([numkMGTPE]|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$/;

/** Every way `value` departs from `schema`, as "path: problem" lines. */
function validate(value: unknown, schema: Schema, path: string): string[] {
  const bad = (what: string) => [`${path}: ${what}, got ${JSON.stringify(value)}`];
  switch (schema.t) {
    case 'string':
      return typeof value === 'string' ? [] : bad('expected a string');
    case 'int':
      return Number.isSafeInteger(value) ? [] : bad('expected an integer');
    case 'bool':
      return typeof value === 'boolean' ? [] : bad('expected true or false');
    case 'quantity':
      return (typeof value === 'string' && QUANTITY.test(value)) ||
        (typeof value === 'number' && Number.isFinite(value))
        ? []
        : bad('expected a quantity (2, "500m", "1Gi")');
    case 'intOrString':
      return Number.isSafeInteger(value) || (typeof value === 'string' && value !== '')
        ? []
        : bad('expected an integer or a string');
    case 'enum':
      return schema.of.includes(value as string) ? [] : bad(`expected one of ${schema.of}`);
    case 'list':
      return Array.isArray(value)
        ? value.flatMap((v, i) => validate(v, schema.of, `${path}[${i}]`))
        : bad('expected a list');
    case 'map':
      return isObject(value)
        ? Object.entries(value).flatMap(([k, v]) => validate(v, schema.of, `${path}.${k}`))
        : bad('expected a mapping');
    case 'object': {
      if (!isObject(value)) return bad('expected a mapping');
      const out: string[] = [];
      for (const [k, v] of Object.entries(value)) {
        const field = schema.fields[k];
        if (field) out.push(...validate(v, field, `${path}.${k}`));
        else out.push(`${path}.${k}: unknown field (allowed: ${Object.keys(schema.fields)})`);
      }
      for (const k of schema.required) {
        if (!(k in value)) out.push(`${path}.${k}: required field missing`);
      }
      return out;
    }
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes API, as far as these recipes go. Every field named here is a field of the
// API (k8s.io/api core/v1, apps/v1, policy/v1, and meta/v1's ObjectMeta and LabelSelector);
// fields the recipes do not use are left out, so using one means adding it here, typed.

const labelSelector = obj({
  matchLabels: map(str),
  matchExpressions: list(
    obj({
      'key!': str,
      'operator!': oneOf('In', 'NotIn', 'Exists', 'DoesNotExist'),
      values: list(str),
    }),
  ),
});
const objectMeta = obj({ 'name!': str, namespace: str, labels: map(str), annotations: map(str) });
const templateMeta = obj({ labels: map(str), annotations: map(str) });

const execAction = obj({ command: list(str) });
const httpGetAction = obj({
  path: str,
  'port!': intOrString,
  host: str,
  scheme: oneOf('HTTP', 'HTTPS'),
  httpHeaders: list(obj({ 'name!': str, 'value!': str })),
});
const tcpSocketAction = obj({ 'port!': intOrString, host: str });
const probe = obj({
  exec: execAction,
  httpGet: httpGetAction,
  tcpSocket: tcpSocketAction,
  grpc: obj({ 'port!': int, service: str }),
  initialDelaySeconds: int,
  timeoutSeconds: int,
  periodSeconds: int,
  successThreshold: int,
  failureThreshold: int,
  terminationGracePeriodSeconds: int,
});
const lifecycleHandler = obj({
  exec: execAction,
  httpGet: httpGetAction,
  sleep: obj({ 'seconds!': int }),
});
const seccompProfile = obj({
  'type!': oneOf('RuntimeDefault', 'Localhost', 'Unconfined'),
  localhostProfile: str,
});
const appArmorProfile = obj({
  'type!': oneOf('RuntimeDefault', 'Localhost', 'Unconfined'),
  localhostProfile: str,
});
const containerSecurityContext = obj({
  capabilities: obj({ add: list(str), drop: list(str) }),
  privileged: bool,
  runAsUser: int,
  runAsGroup: int,
  runAsNonRoot: bool,
  readOnlyRootFilesystem: bool,
  allowPrivilegeEscalation: bool,
  procMount: oneOf('Default', 'Unmasked'),
  seccompProfile,
  appArmorProfile,
});
const podSecurityContext = obj({
  runAsUser: int,
  runAsGroup: int,
  runAsNonRoot: bool,
  supplementalGroups: list(int),
  fsGroup: int,
  fsGroupChangePolicy: oneOf('OnRootMismatch', 'Always'),
  sysctls: list(obj({ 'name!': str, 'value!': str })),
  seccompProfile,
  appArmorProfile,
});
const keySelector = obj({ name: str, 'key!': str, optional: bool });
const envVar = obj({
  'name!': str,
  value: str,
  valueFrom: obj({
    fieldRef: obj({ apiVersion: str, 'fieldPath!': str }),
    resourceFieldRef: obj({ containerName: str, 'resource!': str, divisor: quantity }),
    configMapKeyRef: keySelector,
    secretKeyRef: keySelector,
  }),
});
const container = obj({
  'name!': str,
  image: str,
  imagePullPolicy: oneOf('Always', 'IfNotPresent', 'Never'),
  command: list(str),
  args: list(str),
  workingDir: str,
  ports: list(
    obj({
      name: str,
      'containerPort!': int,
      protocol: oneOf('TCP', 'UDP', 'SCTP'),
      hostPort: int,
      hostIP: str,
    }),
  ),
  env: list(envVar),
  resources: obj({ limits: map(quantity), requests: map(quantity) }),
  volumeMounts: list(obj({ 'name!': str, 'mountPath!': str, readOnly: bool, subPath: str })),
  livenessProbe: probe,
  readinessProbe: probe,
  startupProbe: probe,
  lifecycle: obj({ postStart: lifecycleHandler, preStop: lifecycleHandler }),
  securityContext: containerSecurityContext,
});
const keyToPath = list(obj({ 'key!': str, 'path!': str, mode: int }));
const volume = obj({
  'name!': str,
  emptyDir: obj({ medium: oneOf('', 'Memory'), sizeLimit: quantity }),
  configMap: obj({ name: str, items: keyToPath, defaultMode: int, optional: bool }),
  secret: obj({ secretName: str, items: keyToPath, defaultMode: int, optional: bool }),
  persistentVolumeClaim: obj({ 'claimName!': str, readOnly: bool }),
});
const podSpec = obj({
  'containers!': list(container),
  initContainers: list(container),
  volumes: list(volume),
  restartPolicy: oneOf('Always', 'OnFailure', 'Never'),
  terminationGracePeriodSeconds: int,
  serviceAccountName: str,
  automountServiceAccountToken: bool,
  enableServiceLinks: bool,
  nodeSelector: map(str),
  priorityClassName: str,
  runtimeClassName: str,
  imagePullSecrets: list(obj({ name: str })),
  hostNetwork: bool,
  hostPID: bool,
  hostIPC: bool,
  securityContext: podSecurityContext,
  topologySpreadConstraints: list(
    obj({
      'maxSkew!': int,
      'topologyKey!': str,
      'whenUnsatisfiable!': oneOf('DoNotSchedule', 'ScheduleAnyway'),
      labelSelector,
      minDomains: int,
      nodeAffinityPolicy: oneOf('Honor', 'Ignore'),
      nodeTaintsPolicy: oneOf('Honor', 'Ignore'),
      matchLabelKeys: list(str),
    }),
  ),
});

/** The schema of each kind, by "apiVersion kind". */
const KINDS: Readonly<Record<string, Schema>> = {
  'apps/v1 Deployment': obj({
    'apiVersion!': str,
    'kind!': str,
    'metadata!': objectMeta,
    'spec!': obj({
      replicas: int,
      'selector!': labelSelector,
      'template!': obj({ metadata: templateMeta, 'spec!': podSpec }),
      strategy: obj({
        type: oneOf('RollingUpdate', 'Recreate'),
        rollingUpdate: obj({ maxUnavailable: intOrString, maxSurge: intOrString }),
      }),
      minReadySeconds: int,
      revisionHistoryLimit: int,
      progressDeadlineSeconds: int,
      paused: bool,
    }),
  }),
  'v1 Service': obj({
    'apiVersion!': str,
    'kind!': str,
    'metadata!': objectMeta,
    'spec!': obj({
      type: oneOf('ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'),
      selector: map(str),
      ports: list(
        obj({
          name: str,
          protocol: oneOf('TCP', 'UDP', 'SCTP'),
          appProtocol: str,
          'port!': int,
          targetPort: intOrString,
          nodePort: int,
        }),
      ),
      clusterIP: str,
      sessionAffinity: oneOf('ClientIP', 'None'),
      externalTrafficPolicy: oneOf('Cluster', 'Local'),
      internalTrafficPolicy: oneOf('Cluster', 'Local'),
      publishNotReadyAddresses: bool,
    }),
  }),
  'policy/v1 PodDisruptionBudget': obj({
    'apiVersion!': str,
    'kind!': str,
    'metadata!': objectMeta,
    'spec!': obj({
      minAvailable: intOrString,
      maxUnavailable: intOrString,
      'selector!': labelSelector,
      unhealthyPodEvictionPolicy: oneOf('IfHealthyBudget', 'AlwaysAllow'),
    }),
  }),
  'v1 ConfigMap': obj({
    'apiVersion!': str,
    'kind!': str,
    'metadata!': objectMeta,
    data: map(str),
    immutable: bool,
  }),
};

// ---------------------------------------------------------------------------------------------
// The manifests, as the tests read them.

/** A value read from a manifest: the schema check above vouches for its shape first. */
// biome-ignore lint/suspicious/noExplicitAny: manifests are checked against the schema first
type Loose = any;

/** Loose views of the objects, for the cross checks. */
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: Loose;
}
interface Pod {
  metadata?: { labels?: Record<string, string> };
  spec: Loose;
}
interface Container {
  name: string;
  ports?: { name?: string; containerPort: number; hostPort?: number }[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: { resourceFieldRef?: { containerName?: string; resource: string } };
  }[];
  resources?: {
    limits?: Record<string, string | number>;
    requests?: Record<string, string | number>;
  };
  [k: string]: Loose;
}

interface Doc {
  file: string;
  index: number;
  object: unknown;
}

/** Every YAML document of scripts/deploy/; a YAML error or warning (a duplicate key) throws. */
function loadManifests(): Doc[] {
  const out: Doc[] = [];
  for (const file of readdirSync(DEPLOY)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()) {
    const docs = parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'));
    if (!Array.isArray(docs)) throw new Error(`${file}: not a YAML stream`);
    docs.forEach((doc, index) => {
      const problems = [...doc.errors, ...doc.warnings].map((e) => e.message);
      if (problems.length > 0) throw new Error(`${file} document ${index}: ${problems.join('; ')}`);
      out.push({ file, index, object: doc.toJS() });
    });
  }
  return out;
}

/** Schema problems of one manifest object ("file#n path: problem"). */
function schemaProblems(doc: Doc): string[] {
  const where = `${doc.file}#${doc.index}`;
  if (!isObject(doc.object)) return [`${where}: not a mapping`];
  const key = `${doc.object.apiVersion} ${doc.object.kind}`;
  const schema = KINDS[key];
  if (!schema) return [`${where}: no schema for ${key} (add one to test/deploy.test.ts)`];
  return validate(doc.object, schema, where);
}

const DOCS = loadManifests();
const OBJECTS = DOCS.map((d) => d.object as K8sObject);
const byKind = (kind: string) => OBJECTS.filter((o) => o.kind === kind);
const wsdrain = OBJECTS.find((o) => o.kind === 'Deployment' && o.metadata.name === 'wsdrain');
if (!wsdrain) throw new Error('kubernetes.yaml has no Deployment named wsdrain');
const wsdrainPod: Pod = wsdrain.spec.template;
const wsdrainContainer: Container = wsdrainPod.spec.containers.find(
  (c: Container) => c.name === 'wsdrain',
);

/** Does `selector` (matchLabels only) select pods with `labels`? */
function selects(
  selector: Record<string, string> | undefined,
  labels: Record<string, string> = {},
) {
  const entries = Object.entries(selector ?? {});
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

/** A CPU quantity in cores ("2" → 2, "500m" → 0.5). */
function cores(q: string | number | undefined): number {
  if (typeof q === 'number') return q;
  if (q === undefined) return Number.NaN;
  return q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q);
}

/** The preStop hook's sleep in seconds: the sleep action, or `sleep N` as a command. */
function preStopSeconds(c: Container): number {
  const preStop = c.lifecycle?.preStop;
  if (preStop?.sleep) return preStop.sleep.seconds;
  const cmd: string[] | undefined = preStop?.exec?.command;
  if (cmd?.[0] === 'sleep' && cmd.length === 2) return Number(cmd[1]);
  return 0;
}

/** The container's environment as wsdrain would see it (resourceFieldRef resolved). */
function containerEnv(c: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    const ref = e.valueFrom?.resourceFieldRef;
    if (ref?.resource === 'limits.cpu')
      env[e.name] = String(Math.ceil(cores(c.resources?.limits?.cpu)));
  }
  return env;
}

/**
 * Violations of the "restricted" Pod Security Standard by a pod template, the way the
 * PodSecurity admission (k8s.io/pod-security-admission, policy/check_*.go) checks them (the
 * baseline controls a recipe could trip on included), plus the standard's optional non-root
 * groups.
 */
function restrictedViolations(pod: Pod): string[] {
  const out: string[] = [];
  const spec = pod.spec;
  const psc = spec.securityContext ?? {};
  const containers: Container[] = [...(spec.initContainers ?? []), ...spec.containers];
  for (const ns of ['hostNetwork', 'hostPID', 'hostIPC']) {
    if (spec[ns] === true) out.push(`spec.${ns} must not be true`);
  }
  const allowedVolumes = new Set([
    'configMap',
    'csi',
    'downwardAPI',
    'emptyDir',
    'ephemeral',
    'image',
    'persistentVolumeClaim',
    'projected',
    'secret',
  ]);
  for (const v of spec.volumes ?? []) {
    for (const k of Object.keys(v)) {
      if (k !== 'name' && !allowedVolumes.has(k)) out.push(`volume ${v.name}: ${k} is not allowed`);
    }
  }
  if (psc.runAsUser === 0) out.push('spec.securityContext.runAsUser must not be 0');
  if (psc.runAsGroup === 0) out.push('spec.securityContext.runAsGroup must not be 0');
  const seccompOk = (t: string | undefined) => t === 'RuntimeDefault' || t === 'Localhost';
  if (psc.seccompProfile && !seccompOk(psc.seccompProfile.type)) {
    out.push(`spec.securityContext.seccompProfile.type ${psc.seccompProfile.type} is not allowed`);
  }
  for (const c of containers) {
    const sc = c.securityContext ?? {};
    const name = `container ${c.name}`;
    if (sc.privileged === true) out.push(`${name}: privileged`);
    if (sc.allowPrivilegeEscalation !== false)
      out.push(`${name}: allowPrivilegeEscalation must be false`);
    if (
      !(sc.runAsNonRoot === true || (psc.runAsNonRoot === true && sc.runAsNonRoot === undefined))
    ) {
      out.push(`${name}: runAsNonRoot must be true (pod or container)`);
    }
    if (sc.runAsUser === 0) out.push(`${name}: runAsUser must not be 0`);
    if (sc.runAsGroup === 0) out.push(`${name}: runAsGroup must not be 0`);
    const seccomp = sc.seccompProfile?.type ?? psc.seccompProfile?.type;
    if (!seccompOk(seccomp))
      out.push(`${name}: seccompProfile must be RuntimeDefault or Localhost`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL'))
      out.push(`${name}: must drop ALL capabilities`);
    for (const cap of sc.capabilities?.add ?? []) {
      if (cap !== 'NET_BIND_SERVICE') out.push(`${name}: may not add ${cap}`);
    }
    if (sc.procMount !== undefined && sc.procMount !== 'Default') out.push(`${name}: procMount`);
    for (const p of c.ports ?? []) if (p.hostPort) out.push(`${name}: hostPort ${p.hostPort}`);
    for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
      if (probe?.httpGet?.host || probe?.tcpSocket?.host) out.push(`${name}: a probe sets host`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

describe('Kubernetes manifests (scripts/deploy/*.yaml)', () => {
  it('parse, and every object has only fields its kind has, of the right type', () => {
    const files = new Set(DOCS.map((d) => d.file));
    expect(files.has('kubernetes.yaml') && files.has('kubernetes-redis.yaml')).toBe(true);
    expect(DOCS.flatMap(schemaProblems)).toEqual([]);
  });

  it('the schema check catches a misspelt field, a wrong type and a bad quantity', () => {
    const original = DOCS.find((d) => d.object === wsdrain) as Doc;
    const before = new Set(schemaProblems(original));
    /** The problems a change to a copy of the wsdrain Deployment adds. */
    const added = (change: (c: Loose) => void) => {
      const copy = structuredClone(original);
      change((copy.object as K8sObject).spec.template.spec.containers[0]);
      return schemaProblems(copy).filter((p) => !before.has(p));
    };
    expect(
      added((c) => {
        c.readinessProbe.failureTreshold = c.readinessProbe.failureThreshold;
        delete c.readinessProbe.failureThreshold;
      }),
    ).toEqual([expect.stringContaining('readinessProbe.failureTreshold: unknown field')]);
    expect(
      added((c) => {
        c.env[0].value = 8080;
      }),
    ).toEqual([expect.stringContaining('env[0].value: expected a string')]);
    expect(
      added((c) => {
        c.resources.limits.memory = '1GB';
      }),
    ).toEqual([expect.stringContaining('resources.limits.memory: expected a quantity')]);
  });

  it('every pod meets the "restricted" Pod Security Standard', () => {
    const deployments = byKind('Deployment');
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual(['wsdrain', 'wsdrain-redis']);
    for (const d of deployments) {
      expect(restrictedViolations(d.spec.template), d.metadata.name).toEqual([]);
      // Set at pod level, so that a container added later is covered too.
      expect(d.spec.template.spec.securityContext.seccompProfile.type).toBe('RuntimeDefault');
      expect(d.spec.template.spec.securityContext.runAsNonRoot).toBe(true);
    }
    // The check itself: without the seccomp profile, the pod is refused.
    const stripped = structuredClone(wsdrainPod);
    delete stripped.spec.securityContext.seccompProfile;
    expect(restrictedViolations(stripped)).toEqual([
      'container wsdrain: seccompProfile must be RuntimeDefault or Localhost',
    ]);
  });

  it('the grace period covers preStop + drain budget + margin, as the comments say', () => {
    const env = containerEnv(wsdrainContainer);
    const options = resolveOptions({}, env);
    const preStop = preStopSeconds(wsdrainContainer);
    const budget = options.drainTimeout / 1000;
    const grace: number = wsdrainPod.spec.terminationGracePeriodSeconds;
    expect(preStop).toBeGreaterThanOrEqual(1);
    expect(grace).toBeGreaterThanOrEqual(preStop + budget + MARGIN_S);
    // The drain delay is spent inside the budget (wsdrain refuses one that is not shorter).
    expect(options.drainDelay).toBeLessThan(options.drainTimeout);
    // The arithmetic written at the top of kubernetes.yaml is the one in force.
    const text = readFileSync(join(DEPLOY, 'kubernetes.yaml'), 'utf8');
    const m = /preStop sleep (\d+) s \+ --drain-timeout (\d+) s \+ margin (\d+) s = (\d+) s/.exec(
      text,
    );
    expect(m?.slice(1).map(Number)).toEqual([preStop, budget, grace - preStop - budget, grace]);
  });

  it('probes /readyz (tolerant of one slow answer) and /healthz (slower than a drain)', () => {
    const c = wsdrainContainer;
    const portNames = new Set((c.ports ?? []).map((p) => p.name));
    const ready = c.readinessProbe;
    const live = c.livenessProbe;
    expect(ready.httpGet.path).toBe('/readyz');
    expect(live.httpGet.path).toBe('/healthz');
    expect(portNames.has(ready.httpGet.port)).toBe(true);
    expect(portNames.has(live.httpGet.port)).toBe(true);
    // The probed port is the one wsdrain listens on.
    const http = (c.ports ?? []).find((p) => p.name === ready.httpGet.port);
    expect(resolveOptions({}, containerEnv(c)).port).toBe(http?.containerPort);
    // One slow or failed answer does not pull a healthy pod.
    expect(ready.failureThreshold).toBeGreaterThanOrEqual(2);
    expect(ready.failureThreshold).toBeLessThanOrEqual(3);
    expect(ready.timeoutSeconds).toBeGreaterThanOrEqual(2);
    // A liveness kill (1006 to every socket) cannot come within a whole drain.
    const budget = resolveOptions({}, containerEnv(c)).drainTimeout / 1000;
    expect(live.failureThreshold * live.periodSeconds).toBeGreaterThan(preStopSeconds(c) + budget);
  });

  it("the Services, the PodDisruptionBudget and the spread select the Deployments' pods", () => {
    const deployments = byKind('Deployment');
    for (const d of deployments) {
      const labels = d.spec.template.metadata.labels;
      expect(selects(d.spec.selector.matchLabels, labels), d.metadata.name).toBe(true);
      for (const t of d.spec.template.spec.topologySpreadConstraints ?? []) {
        expect(selects(t.labelSelector?.matchLabels, labels), `${d.metadata.name} spread`).toBe(
          true,
        );
      }
    }
    for (const s of byKind('Service')) {
      const target = deployments.find((d) =>
        selects(s.spec.selector, d.spec.template.metadata.labels),
      );
      expect(target, `Service ${s.metadata.name} selects no Deployment`).toBeDefined();
      const ports = target?.spec.template.spec.containers.flatMap((c: Container) => c.ports ?? []);
      for (const p of s.spec.ports) {
        const found = ports.some(
          (cp: { name?: string; containerPort: number }) =>
            cp.name === p.targetPort || cp.containerPort === (p.targetPort ?? p.port),
        );
        expect(found, `Service ${s.metadata.name} port ${p.name}`).toBe(true);
      }
    }
    const pdbs = byKind('PodDisruptionBudget');
    expect(pdbs.map((p) => p.metadata.name)).toEqual(['wsdrain']);
    const pdb = pdbs[0] as K8sObject;
    // The same selector as the Deployment's (the docs' advice), and it selects its pods.
    expect(pdb.spec.selector).toEqual(wsdrain.spec.selector);
    expect(selects(pdb.spec.selector.matchLabels, wsdrainPod.metadata?.labels)).toBe(true);
    // One eviction at a time, never zero (which would block node drains for good).
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(pdb.spec.minAvailable).toBeUndefined();
  });

  it('spreads wsdrain over nodes, never below capacity in a rollout, cores as workers', () => {
    const spread = wsdrainPod.spec.topologySpreadConstraints;
    expect(spread).toEqual([
      expect.objectContaining({
        maxSkew: 1,
        topologyKey: 'kubernetes.io/hostname',
        nodeTaintsPolicy: 'Honor',
        matchLabelKeys: ['pod-template-hash'],
      }),
    ]);
    expect(wsdrain.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(wsdrain.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    // Guaranteed QoS: requests = limits for CPU and memory, whole cores; workers = cores.
    const { requests, limits } = wsdrainContainer.resources ?? {};
    expect(requests).toEqual(limits);
    expect(Number.isInteger(cores(limits?.cpu))).toBe(true);
    expect(limits?.memory).toBeDefined();
    const workers = wsdrainContainer.env?.find((e) => e.name === 'WSDRAIN_WORKERS');
    expect(workers?.valueFrom?.resourceFieldRef).toMatchObject({
      containerName: wsdrainContainer.name,
      resource: 'limits.cpu',
    });
    expect(resolveOptions({}, containerEnv(wsdrainContainer)).workers).toBe(cores(limits?.cpu));
  });
});

describe('WSDRAIN_* variables in the recipes', () => {
  it('name options wsdrain has (wsdrain ignores an unknown one)', () => {
    const known = new Set(OPTION_DEFS.map((d) => envName(d.flag)));
    // WSDRAIN_OPTS is the systemd unit's own: extra flags for ExecStart.
    known.add('WSDRAIN_OPTS');
    for (const file of readdirSync(DEPLOY).filter((f) => f !== 'README.md')) {
      const names = readFileSync(join(DEPLOY, file), 'utf8').match(/\bWSDRAIN_[A-Z0-9_]+\b/g);
      for (const name of names ?? []) expect(known.has(name), `${file}: ${name}`).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// systemd

/** The keys of systemd.unit(5), systemd.service(5), systemd.exec(5) and systemd.kill(5) that a
 * wsdrain unit may use, per section. */
const UNIT_KEYS: Readonly<Record<string, readonly string[]>> = {
  Unit: [
    'Description',
    'Documentation',
    'After',
    'Before',
    'Wants',
    'Requires',
    'BindsTo',
    'PartOf',
    'StartLimitIntervalSec',
    'StartLimitBurst',
  ],
  Service: [
    'Type',
    'Environment',
    'EnvironmentFile',
    'WorkingDirectory',
    'ExecStart',
    'ExecReload',
    'KillMode',
    'KillSignal',
    'TimeoutStartSec',
    'TimeoutStopSec',
    'Restart',
    'RestartSec',
    'LimitNOFILE',
    'SyslogIdentifier',
    'SyslogLevel',
    'SyslogLevelPrefix',
    'User',
    'Group',
    'DynamicUser',
    'StateDirectory',
    'NoNewPrivileges',
    'ProtectSystem',
    'ProtectHome',
    'PrivateTmp',
    'PrivateDevices',
    'ProtectKernelTunables',
    'ProtectKernelModules',
    'ProtectKernelLogs',
    'ProtectControlGroups',
    'ProtectClock',
    'ProtectHostname',
    'RestrictNamespaces',
    'RestrictRealtime',
    'RestrictSUIDSGID',
    'LockPersonality',
    'SystemCallArchitectures',
    'SystemCallFilter',
    'SystemCallErrorNumber',
    'RestrictAddressFamilies',
    'CapabilityBoundingSet',
    'AmbientCapabilities',
  ],
  Install: ['WantedBy', 'RequiredBy', 'Alias'],
};

/** A unit file as sections of [key, value] pairs; throws on a line that is none of those. */
function parseUnit(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let current: [string, string][] | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const section = /^\[([A-Za-z]+)\]$/.exec(line);
    if (section) {
      current = [];
      sections.set(section[1] as string, current);
      return;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`wsdrain.service:${i + 1}: not a key=value line: ${raw}`);
    current.push([kv[1] as string, kv[2] as string]);
  });
  return sections;
}

/** A systemd time span ("15s", "1min 30s", "90") in seconds. */
function timespan(v: string): number {
  const units: Record<string, number> = { '': 1, s: 1, sec: 1, m: 60, min: 60, ms: 0.001 };
  let total = 0;
  for (const part of v.trim().split(/\s+/)) {
    const m = /^(\d+(?:\.\d+)?)([a-z]*)$/.exec(part);
    const unit = m ? units[m[2] as string] : undefined;
    if (!m || unit === undefined) throw new Error(`not a time span: ${v}`);
    total += Number(m[1]) * unit;
  }
  return total;
}

describe('systemd unit (scripts/deploy/wsdrain.service)', () => {
  const unit = parseUnit(readFileSync(join(DEPLOY, 'wsdrain.service'), 'utf8'));
  const service = new Map(unit.get('Service'));

  it('has only [Unit], [Service], [Install] and keys systemd knows there', () => {
    expect([...unit.keys()]).toEqual(['Unit', 'Service', 'Install']);
    for (const [section, pairs] of unit) {
      for (const [key] of pairs) {
        expect(UNIT_KEYS[section]?.includes(key), `[${section}] ${key}`).toBe(true);
      }
    }
  });

  it('stops the primary only, and waits longer than the drain budget', () => {
    expect(service.get('Type')).toBe('exec');
    expect(service.get('KillMode')).toBe('mixed');
    expect(service.get('KillSignal')).toBe('SIGTERM');
    expect(service.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(service.get('Restart')).toBe('on-failure');
    const stop = timespan(service.get('TimeoutStopSec') ?? '');
    expect(stop).toBeGreaterThanOrEqual(kDefaultOptions.drainTimeout / 1000 + MARGIN_S);
  });

  it("filters system calls to systemd's service set without killing node", () => {
    const filter = (service.get('SystemCallFilter') ?? '').split(/\s+/);
    expect(filter).toContain('@system-service');
    // V8 calls pkey_alloc at start (not in @system-service); without an errno for the calls
    // outside the list, systemd would kill the process with SIGSYS.
    expect(filter).toContain('@pkey');
    expect(service.get('SystemCallErrorNumber')).toBe('EPERM');
    expect(service.get('SystemCallArchitectures')).toBe('native');
  });
});

// ---------------------------------------------------------------------------------------------
// pm2

const requireCjs = createRequire(import.meta.url);
const ECOSYSTEM = join(DEPLOY, 'ecosystem.config.cjs');

interface Pm2App {
  kill_timeout: number;
  treekill: boolean;
  env: Record<string, string>;
  [k: string]: unknown;
}

/** Loads the ecosystem file afresh with `env` set (it reads the environment when loaded). */
function loadEcosystem(env: Record<string, string | undefined>): { apps: Pm2App[] } {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k];
  try {
    delete requireCjs.cache[requireCjs.resolve(ECOSYSTEM)];
    return requireCjs(ECOSYSTEM);
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

describe('pm2 ecosystem file (scripts/deploy/ecosystem.config.cjs)', () => {
  it("loads, and every option is one of pm2's, of pm2's type", () => {
    const schema: Record<string, { type: string | string[]; alias?: string }> = requireCjs(
      join(ROOT, 'node_modules', 'pm2', 'lib', 'API', 'schema.json'),
    );
    const { apps } = loadEcosystem({ WSDRAIN_DRAIN_TIMEOUT: undefined });
    expect(apps).toHaveLength(1);
    for (const [key, value] of Object.entries(apps[0] as Pm2App)) {
      const def = schema[key];
      expect(def, `pm2 has no option ${key}`).toBeDefined();
      const types = ([] as string[]).concat(def?.type ?? []);
      const type = Array.isArray(value) ? 'array' : typeof value;
      expect(types, key).toContain(type);
    }
  });

  it('grants more than the drain budget before SIGKILL and signals the primary only', () => {
    const app = loadEcosystem({ WSDRAIN_DRAIN_TIMEOUT: undefined }).apps[0] as Pm2App;
    expect(app.treekill).toBe(false);
    expect(app.exec_mode).toBe('fork');
    expect(app.instances).toBe(1);
    expect(app.wait_ready).toBe(true);
    expect(app.listen_timeout).toBeGreaterThan(WORKER_START_TIMEOUT_MS);
    expect(app.env.WSDRAIN_DRAIN_TIMEOUT).toBe(String(kDefaultOptions.drainTimeout));
    expect(app.kill_timeout).toBeGreaterThanOrEqual(kDefaultOptions.drainTimeout + MARGIN_S * 1000);
    // The budget follows WSDRAIN_DRAIN_TIMEOUT, and the app gets the same value.
    const custom = loadEcosystem({ WSDRAIN_DRAIN_TIMEOUT: '30000' }).apps[0] as Pm2App;
    expect(custom.env.WSDRAIN_DRAIN_TIMEOUT).toBe('30000');
    expect(custom.kill_timeout).toBeGreaterThanOrEqual(30_000 + MARGIN_S * 1000);
    expect(() => loadEcosystem({ WSDRAIN_DRAIN_TIMEOUT: '10s' })).toThrow(/WSDRAIN_DRAIN_TIMEOUT/);
  });
});

// ---------------------------------------------------------------------------------------------

describe("the docs quote the recipes' numbers", () => {
  it('README.md and scripts/deploy/README.md name the grace period and the stop timeouts', () => {
    const grace = wsdrainPod.spec.terminationGracePeriodSeconds;
    const unit = parseUnit(readFileSync(join(DEPLOY, 'wsdrain.service'), 'utf8'));
    const stop = new Map(unit.get('Service')).get('TimeoutStopSec');
    for (const doc of [join(ROOT, 'README.md'), join(DEPLOY, 'README.md')]) {
      const text = readFileSync(doc, 'utf8');
      for (const quote of [`terminationGracePeriodSeconds: ${grace}`, `TimeoutStopSec=${stop}`]) {
        expect(text.includes(quote), `${doc} quotes ${quote}`).toBe(true);
      }
    }
  });
});
