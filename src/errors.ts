/**
 * Errors with stable `code` strings. Every code is listed in the README ("Error codes").
 */

/** Base class: every wsdrain error has a stable `code`. */
export class WsdrainError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'WsdrainError';
    this.code = code;
  }
}

/** A flag, environment variable or option has a value wsdrain does not accept. */
export class InvalidOptionError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_INVALID_OPTION', message);
    this.name = 'InvalidOptionError';
  }
}

/** The command line names an unknown flag or command. */
export class UsageError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_USAGE', message);
    this.name = 'UsageError';
  }
}

/** The `--handler` module could not be loaded or has no handler function. */
export class HandlerLoadError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_HANDLER_LOAD', message);
    this.name = 'HandlerLoadError';
  }
}

/** A handler threw, rejected or ran past `--task-timeout` while answering a message. */
export class HandlerError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_HANDLER', message);
    this.name = 'HandlerError';
  }
}

/** The server could not listen (port in use, permission denied, ...). */
export class ListenError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_LISTEN', message);
    this.name = 'ListenError';
  }
}

/** A drain was asked for while one is already running, or after the server closed. */
export class DrainStateError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_DRAIN_STATE', message);
    this.name = 'DrainStateError';
  }
}

/** The `--app` module cannot be loaded, or what it exports is not an app. */
export class AppLoadError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_APP_LOAD', message);
    this.name = 'AppLoadError';
  }
}

/** An app hook threw, rejected or ran past its time (the log names the hook). */
export class HookError extends WsdrainError {
  readonly hook: string;
  readonly timedOut: boolean;
  constructor(hook: string, message: string, timedOut = false) {
    super('WSD_ERR_HOOK', message);
    this.name = 'HookError';
    this.hook = hook;
    this.timedOut = timedOut;
  }
}

/** A publication could not be made: the broker is away, or the topic or data is not accepted. */
export class PublishError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_PUBLISH', message);
    this.name = 'PublishError';
  }
}

/** The broker (`--broker`) cannot be reached at start, or its URL is not one. */
export class BrokerError extends WsdrainError {
  constructor(message: string) {
    super('WSD_ERR_BROKER', message);
    this.name = 'BrokerError';
  }
}
