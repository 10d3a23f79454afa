// holdfast.d.ts -- types of holdfast.js, the holdfast long-poll client.

/** A message as the subscribe API delivers it. */
export interface HoldfastMessage<T = unknown> {
  /** Strictly increasing across the whole log; the cursor is built from it. */
  id: number;
  channel: string;
  /** Publish time, milliseconds since the Unix epoch. */
  time: number;
  /** The Content-Type it was published with. */
  type: string;
  /** The JSON value for JSON messages, a string for text, base64 otherwise. */
  data: T;
  /** Present (as "base64") when data is base64 of a binary body. */
  encoding?: 'base64';
  /** The compaction key (Holdfast-Key) it was published with, if any. */
  key?: string;
}

/** The position a subscription resumes from. */
export interface HoldfastPosition {
  cursor: number;
  epoch: string | null;
}

/** Where positions are kept, keyed per base URL and channel set.
 *  get may return a promise; set's result is ignored. */
export interface CursorStore {
  get(key: string): HoldfastPosition | null | undefined | Promise<HoldfastPosition | null | undefined>;
  set(key: string, value: HoldfastPosition): void | Promise<void>;
}

export type HoldfastStatus = 'connecting' | 'live' | 'reconnecting' | 'stopped';

/** Detail of onStatus: for 'reconnecting' the failure, the wait before the
 *  next try (ms) and the number of failures in a row; for 'stopped' the error
 *  that stopped it (absent after stop()). */
export interface StatusDetail {
  error?: HoldfastError | Error;
  delay?: number;
  attempt?: number;
}

export interface GapInfo {
  /** The oldest id still held (null if nothing is held). */
  oldest: number | null;
  /** The cursor the client had: messages after it and before oldest are lost. */
  cursor: number;
}

export interface ResetInfo {
  /** The head of the current database. */
  head: number;
  /** The cursor the subscription follows from now on. */
  cursor: number;
}

export interface SubscribeOptions<T = unknown> {
  /** One or more channel names (1-128 of [A-Za-z0-9._:@-]); "a,b" is accepted. */
  channels: string | string[];
  /** Each message once, in id order. */
  onMessage?: (message: HoldfastMessage<T>) => void;
  /** Retention pruned messages after the cursor; called before the rest. */
  onGap?: (gap: GapInfo) => void;
  /** The cursor belonged to another database; following from info.cursor. */
  onReset?: (info: ResetInfo) => void;
  onStatus?: (status: HoldfastStatus, detail?: StatusDetail) => void;
  /** Where {cursor, epoch} is kept: localStorage by default (memory where
   *  there is none); null keeps it in memory only. */
  cursorStore?: CursorStore | null;
  /** The store key; default "holdfast:{base}|{sorted channels}". */
  storeKey?: string;
  /** Start after this id when nothing is stored (0: everything retained). */
  since?: number;
  /** Start with the newest `last` messages when nothing is stored and no since. */
  last?: number;
  /** Seconds the server holds a poll (default 25). */
  timeout?: number;
  /** Back-off after failures: first wait ~base ms (default 500), at most max (30000). */
  backoffBase?: number;
  backoffMax?: number;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Sent as Authorization: Bearer: a signed subscribe token for
   *  `subscribe = token` channels.  A function is asked before every request
   *  (so it can return a fresh token), and a 401 answer is then retried with
   *  back-off instead of stopping the subscription. */
  token?: string | (() => string | Promise<string>);
  credentials?: RequestCredentials;
  /** 'long-poll' (default); 'sse': one EventSource (Accept:
   *  text/event-stream), same cursor and store; 'auto': 'sse' where
   *  EventSource exists and neither `fetch`, `headers` nor a token function
   *  is given.  An event stream that does not open within sseOpenTimeout ms
   *  (default 5000; a server with `sse = off` answers 406) makes the
   *  subscription long-poll from the same position. */
  transport?: 'long-poll' | 'sse' | 'auto';
  sseOpenTimeout?: number;
  /** The EventSource constructor (default globalThis.EventSource). */
  EventSource?: unknown;
  /** Injection points (tests, other runtimes). */
  fetch?: typeof fetch;
  random?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface Subscription {
  /** Ends the subscription: aborts the request in flight; no callback fires
   *  afterwards except onStatus('stopped'). */
  stop(): void;
  /** What the next request sends. */
  readonly position: { cursor: number | null; epoch: string | null };
  readonly status: HoldfastStatus | null;
}

export function subscribe<T = unknown>(baseUrl: string, options: SubscribeOptions<T>): Subscription;

export interface PublishOptions {
  /** Default: a fresh UUID, reused by every retry of this call. */
  idempotencyKey?: string;
  /** Content-Type; default text/plain;charset=utf-8 for strings,
   *  application/octet-stream for binary, application/json otherwise. */
  type?: string;
  /** Holdfast-Key: this message is the latest value of `key`. */
  key?: string;
  /** Extra headers. */
  headers?: Record<string, string>;
  /** Sent as Authorization: Bearer: the publish key, or a token whose
   *  holdfast.publish list grants the channel.  A function is asked before
   *  every attempt. */
  token?: string | (() => string | Promise<string>);
  /** Retries after network errors, 5xx, 408 and 429 (default 3). */
  retries?: number;
  backoffBase?: number;
  backoffMax?: number;
  signal?: AbortSignal;
  credentials?: RequestCredentials;
  fetch?: typeof fetch;
  random?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Publishes; resolves to the message id (the original one on a replay). */
export function publish(baseUrl: string, channel: string,
                        data: string | Blob | ArrayBuffer | ArrayBufferView | object | number | boolean | null,
                        options?: PublishOptions): Promise<number>;

export class HoldfastError extends Error {
  constructor(message: string, init?: { status?: number; code?: string; detail?: string; retryAfter?: number | null });
  /** HTTP status; 0 for a network error or an unreadable answer. */
  status: number;
  /** The server's error code, e.g. "bad_channel". */
  code: string;
  detail: string;
  /** Milliseconds the server asked to wait (Retry-After), or null. */
  retryAfter: number | null;
}

export function memoryStore(): CursorStore;
export function webStorageStore(storage: Storage): CursorStore;
export function defaultStore(): CursorStore;
export function newIdempotencyKey(): string;
