// One EventSource on /api/events for the whole page, opened after login. The live flow keeps the
// newest 500 `message` events here, so they survive moving between pages.

import type { Dashboard, FlowEvent } from './api';

export type SseState = 'connecting' | 'open' | 'closed';

export const FLOW_MAX = 500;

type Handler<T> = (data: T) => void;

const dashboardHandlers = new Set<Handler<Dashboard>>();
const changeHandlers = new Set<() => void>();

let source: EventSource | null = null;
let retryTimer: number | undefined;
let state: SseState = 'closed';
let reconnectCheck: () => Promise<boolean> = async () => true;

/** The live flow, newest first; while paused, new rows wait in `pending`. */
export const flow = {
  rows: [] as FlowEvent[],
  pending: [] as FlowEvent[],
  paused: false,
};

function notify(): void {
  for (const h of changeHandlers) h();
}

function setState(s: SseState): void {
  state = s;
  notify();
}

export function sseState(): SseState {
  return state;
}

function pushFlow(ev: FlowEvent): void {
  const list = flow.paused ? flow.pending : flow.rows;
  list.unshift(ev);
  if (list.length > FLOW_MAX) list.length = FLOW_MAX;
  notify();
}

export function setPaused(paused: boolean): void {
  if (!paused && flow.pending.length) {
    flow.rows = flow.pending.concat(flow.rows).slice(0, FLOW_MAX);
    flow.pending = [];
  }
  flow.paused = paused;
  notify();
}

export function clearFlow(): void {
  flow.rows = [];
  flow.pending = [];
  notify();
}

function parse<T>(e: MessageEvent): T | null {
  try {
    return JSON.parse(e.data) as T;
  } catch {
    return null;
  }
}

/**
 * Opens the stream. `check` is called before reconnecting after the server closed it, and says
 * whether the session is still good (a 401 shows the login form instead).
 */
export function connect(check?: () => Promise<boolean>): void {
  if (check) reconnectCheck = check;
  if (source) return;
  window.clearTimeout(retryTimer);
  const es = new EventSource('/api/events', { withCredentials: true });
  source = es;
  setState('connecting');
  es.onopen = () => setState('open');
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      // The server refused or ended the stream: the browser will not retry on its own.
      if (source === es) source = null;
      setState('closed');
      retryTimer = window.setTimeout(async () => {
        if (await reconnectCheck().catch(() => false)) connect();
      }, 3000);
    } else {
      setState('connecting');
    }
  };
  es.addEventListener('message', (e) => {
    const ev = parse<FlowEvent>(e as MessageEvent);
    if (ev) pushFlow(ev);
  });
  es.addEventListener('dashboard', (e) => {
    const d = parse<Dashboard>(e as MessageEvent);
    if (d) for (const h of dashboardHandlers) h(d);
  });
}

export function disconnect(): void {
  window.clearTimeout(retryTimer);
  source?.close();
  source = null;
  flow.rows = [];
  flow.pending = [];
  flow.paused = false;
  setState('closed');
}

export function onDashboard(h: Handler<Dashboard>): () => void {
  dashboardHandlers.add(h);
  return () => dashboardHandlers.delete(h);
}

/** Called on any change of the flow or of the connection state. */
export function onChange(h: () => void): () => void {
  changeHandlers.add(h);
  return () => changeHandlers.delete(h);
}
