// The engine's JSON API (docs/console-api.md). Same-origin fetch with the session cookie; every
// POST carries the session's CSRF token in X-CSRF-Token.

export type Role = 'viewer' | 'operator' | 'admin';

export interface Me {
  user: string;
  role: Role;
  csrf: string;
  routes: string[] | null;
  destinations: string[] | null;
}

export interface RouteStats {
  name: string;
  received: number;
  accepted: number;
  accepted_with_warnings: number;
  rejected_by_izhub: number;
  rejected_by_iis: number;
  errored: number;
  unresolved_errors: number;
  rate_per_min: number;
  p95_ms: number | null;
}

export interface DestinationStats {
  name: string;
  received: number;
  accepted: number;
  accepted_with_warnings: number;
  rejected_by_izhub: number;
  rejected_by_iis: number;
  errored: number;
  unresolved_errors: number;
  /** The queue's fields are absent until its queue has reported (and for relay-only destinations). */
  queued?: number;
  /** Absent when nothing is queued. */
  oldest_queued_secs?: number | null;
  breaker?: 'closed' | 'open' | 'half-open' | string;
  paused?: boolean;
  rate_per_min: number;
  p95_ms: number | null;
}

export interface Dashboard {
  generated_at: string;
  routes: RouteStats[];
  destinations: DestinationStats[];
  /** In a cluster: how many nodes' counts are added up. */
  nodes?: number;
  /** In a cluster: nodes that could not be asked this time. */
  unreachable?: string[];
}

/** One route's or destination's counts per bucket, oldest first. */
export interface Series {
  name: string;
  received: number[];
  rejected: number[];
}

export interface Period {
  /** Seconds each bucket covers. */
  step_secs: number;
  /** Start of the first bucket, ms since the epoch. */
  start_ms: number;
  routes: Series[];
  destinations: Series[];
}

/** `GET /api/dashboard/history`: the last hour by minute, the last seven days by hour. */
export interface Traffic {
  last_hour: Period;
  last_days: Period;
}

export interface ClusterNode {
  id: string;
  started_at: number;
  heartbeat_at: number;
  heartbeat_age_ms: number;
  leases: number;
}

export interface Cluster {
  node: string;
  lease_ms: number;
  fenced: number;
  nodes: ClusterNode[];
}

export interface FlowEvent {
  id: number | string;
  time: string;
  listener: string;
  sender: string;
  type: string;
  control_id: string;
  route: string | null;
  destination: string | null;
  outcome: string;
  ack: string | null;
  latency_ms: number | null;
}

export interface MessageMeta {
  id: number | string;
  time: string;
  listener: string;
  sender: string;
  type: string;
  control_id: string;
  patient_id: string | null;
  route: string | null;
  destination: string | null;
  status: string;
  ack: string | null;
  detections: string[];
  latency_ms: number | null;
  resolved: boolean;
  /** In a cluster: the node whose log holds it. */
  node?: string;
}

export interface MessagePage {
  items: MessageMeta[];
  next: number | string | null;
  partial?: boolean;
  /** In a cluster: nodes that could not be asked this time. */
  unreachable?: string[];
}

export interface Issue {
  severity: string;
  code: string;
  location: string;
  text: string;
}

export interface Stage {
  plugin: string;
  verdict: string;
  /** How many issues the plugin reported (they are listed with the message's issues). */
  issues: number | Issue[];
  changed: boolean;
  /** The message as the plugin left it; absent when it did not change it or the text was not kept. */
  text?: string | null;
}

export interface Attempt {
  time: string;
  destination: string;
  result: string;
  class: string | null;
  answer: string | null;
}

export interface MessageDetail {
  meta: MessageMeta;
  received: string;
  stages: Stage[];
  issues: Issue[];
  answer: string | null;
  answer_decoded: {
    msa: { code: string; control_id: string; text: string } | null;
    err: { location: string; code: string; severity: string; text: string }[];
  } | null;
  attempts: Attempt[];
  masked: boolean;
  /** Delivered through the queue (commit mode): Retry now and Resend apply. */
  journaled: boolean;
  /** The logged message this one reprocessed. */
  reprocess_of?: number | null;
  /** Messages made by reprocessing this one. */
  reprocessed_as?: number[];
}

export interface Codeset {
  name: string;
  source: string;
  date: string | null;
  count: number;
  age_days: number | null;
  stale: boolean;
}

export interface AuditEntry {
  id: number | string;
  time: string;
  user: string;
  action: string;
  target: string;
  result: string;
}

/** What `/api/quality` answers per sending facility (MSH-4). */
export interface Completeness {
  race_reported: number;
  race_complete: number;
  ethnicity_reported: number;
  ethnicity_complete: number;
}
export interface Day {
  day: string;
  messages: number;
  rejected: number;
  completeness: Completeness;
}
export interface Example {
  id: number;
  control_id: string;
  location: string;
  text: string;
  segment: string;
}
export interface Detection {
  id: string;
  messages: number;
  example_id: number;
  example: Example | null;
}
export interface SenderQuality {
  sender: string;
  messages: number;
  rejected: number;
  by_day: Day[];
  top_detections: Detection[];
}

/** `GET /api/quality`: the period in days and each sending facility. */
export interface Quality {
  days: number;
  senders: SenderQuality[];
}

/** `POST /api/reprocess` unconfirmed: how many messages match (at most `limit`). */
export interface ReprocessCount {
  count: number;
  limit: number;
  /** In a cluster: nodes that could not be asked. */
  unreachable?: string[];
}

/** `POST /api/reprocess` confirmed: how it went. */
export interface ReprocessDone {
  ok: boolean;
  reprocessed: number;
  failed: number;
  /** In a cluster: nodes that could not be asked. */
  unreachable?: string[];
}

/** `POST /api/messages/{id}/reprocess`: the answer it got and the new message. */
export interface Reprocessed {
  ok: boolean;
  ack: string;
  message: number | null;
}

export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

let csrf: string | null = null;
let onUnauthorized: () => void = () => {};

/** Sets what happens when the server answers 401 (the session ended): show the login form. */
export function setUnauthorizedHandler(f: () => void): void {
  onUnauthorized = f;
}

export function setCsrf(token: string | null): void {
  csrf = token;
}

async function errorText(res: Response): Promise<string> {
  let detail = res.statusText;
  try {
    const body = await res.json();
    if (body && typeof body.error === 'string') detail = body.error;
  } catch {
    // not JSON: keep the status text
  }
  return `${res.status} ${detail}`.trim();
}

/** One API call. Throws ApiError with the server's `error` text on any non-2xx answer. */
export async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && path !== '/api/login') {
    csrf = null;
    onUnauthorized();
    throw new ApiError(401, 'Your session has ended: please log in again.');
  }
  if (!res.ok) throw new ApiError(res.status, await errorText(res));
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as T;
}

/** Builds a query string from the non-empty values; values go in the API call only, never in the page URL. */
export function query(params: Record<string, string | number | boolean | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export async function getMe(): Promise<Me> {
  const me = await api<Me>('GET', '/api/me');
  setCsrf(me.csrf);
  return me;
}

export async function login(user: string, password: string): Promise<Me> {
  const res = await fetch('/api/login', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ user, password }),
  });
  if (res.status === 401) throw new ApiError(401, 'Wrong user name or password.');
  if (res.status === 429) throw new ApiError(429, 'Too many attempts from this address: wait a while and try again.');
  if (!res.ok) throw new ApiError(res.status, await errorText(res));
  const body = (await res.json()) as { csrf?: string };
  if (body.csrf) setCsrf(body.csrf);
  return getMe();
}

/** `GET /api/login/options`: the single sign-on button, when a provider is configured. */
export interface LoginOptions {
  sso: { label: string; url: string } | null;
}

export async function loginOptions(): Promise<LoginOptions> {
  const res = await fetch('/api/login/options', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (!res.ok) return { sso: null };
  return (await res.json()) as LoginOptions;
}

/** `POST /api/logout`'s answer: for a single sign-on session, where to end it at the provider. */
export interface LoggedOut {
  ok: boolean;
  sso_logout?: string;
}

/** Ends the session; the provider's logout URL for a single sign-on session. */
export async function logout(): Promise<string | null> {
  try {
    const out = await api<LoggedOut>('POST', '/api/logout');
    return out.sso_logout ?? null;
  } finally {
    setCsrf(null);
  }
}

/** What the login page says when the provider's sign-in was refused (`?sso_error=` from the engine). */
export const SSO_ERRORS: Record<string, string> = {
  state: 'Single sign-on was refused: the sign-in did not start in this browser, or was already used. Try again.',
  login_expired: 'Single sign-on took too long. Try again.',
  denied: 'The identity provider did not sign you in.',
  nonce: 'Single sign-on was refused: the identity provider answered for another sign-in.',
  token_expired: "Single sign-on was refused: the identity provider's token has expired (check both clocks).",
  no_role: 'You are signed in at the identity provider, but none of your groups may use this console.',
  provider: 'The identity provider could not be reached or answered wrongly; the engine log says why.',
};

export function canAct(me: Me | null): boolean {
  return !!me && (me.role === 'operator' || me.role === 'admin');
}

export function isAdmin(me: Me | null): boolean {
  return !!me && me.role === 'admin';
}

export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
