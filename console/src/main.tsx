import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, errorMessage, getMe, isAdmin, logout, setUnauthorizedHandler, type Me } from './api';
import { ErrorBox } from './components';
import { connect, disconnect, onChange, sseState } from './events';
import { Audit } from './pages/Audit';
import { Codesets } from './pages/Codesets';
import { Dashboard } from './pages/Dashboard';
import { Detail } from './pages/Detail';
import { Live } from './pages/Live';
import { Login } from './pages/Login';
import { Messages } from './pages/Messages';
import { Quality } from './pages/Quality';

function currentPath(): string {
  const h = location.hash.replace(/^#/, '');
  return h.startsWith('/') ? h : '/dashboard';
}

function useHashPath(): string {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const f = () => setPath(currentPath());
    window.addEventListener('hashchange', f);
    return () => window.removeEventListener('hashchange', f);
  }, []);
  return path;
}

const NAV: [string, string][] = [
  ['/dashboard', 'Dashboard'],
  ['/live', 'Live flow'],
  ['/messages', 'Messages'],
  ['/quality', 'Data quality'],
  ['/codesets', 'Code sets'],
  ['/audit', 'Audit'],
];

function StreamStatus() {
  const [state, setState] = useState(sseState());
  useEffect(() => {
    const off = onChange(() => setState(sseState()));
    setState(sseState()); // it may have changed between the first render and this effect
    return off;
  }, []);
  return (
    <span class={`sse sse-${state}`} data-testid="sse-status" title="Live updates from the engine">
      {state === 'open' ? 'live' : state === 'connecting' ? 'connecting…' : 'offline'}
    </span>
  );
}

function Page({ path, me }: { path: string; me: Me }) {
  const detail = /^\/messages\/([^/]+)$/.exec(path);
  if (detail) return <Detail id={decodeURIComponent(detail[1])} me={me} />;
  switch (path) {
    case '/dashboard':
      return <Dashboard me={me} />;
    case '/live':
      return <Live />;
    case '/messages':
      return <Messages me={me} />;
    case '/quality':
      return <Quality />;
    case '/codesets':
      return <Codesets />;
    case '/audit':
      return <Audit me={me} />;
    default:
      return (
        <main>
          <h1>Not found</h1>
          <p>
            <a href="#/dashboard">Dashboard</a>
          </p>
        </main>
      );
  }
}

async function sessionAlive(): Promise<boolean> {
  try {
    await getMe();
    return true;
  } catch {
    return false;
  }
}

function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [phase, setPhase] = useState<'loading' | 'login' | 'app' | 'down'>('loading');
  const [error, setError] = useState<string | null>(null);
  const path = useHashPath();

  function enter(m: Me) {
    setMe(m);
    setPhase('app');
    connect(sessionAlive);
  }

  async function start() {
    setError(null);
    try {
      enter(await getMe());
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) setPhase('login');
      else {
        setError(`The engine did not answer: ${errorMessage(e)}`);
        setPhase('down');
      }
    }
  }

  useEffect(() => {
    setUnauthorizedHandler(() => {
      disconnect();
      setMe(null);
      setPhase('login');
    });
    start();
  }, []);

  if (phase === 'loading') return <p class="muted pad">Loading…</p>;
  if (phase === 'down') {
    return (
      <main>
        <ErrorBox error={error} />
        <button type="button" onClick={start}>
          Try again
        </button>
      </main>
    );
  }
  if (phase === 'login' || !me) return <Login onLogin={enter} />;

  const section = '/' + (path.split('/')[1] ?? '');
  return (
    <>
      <header>
        <span class="brand">izhub</span>
        <nav>
          {NAV.filter(([p]) => p !== '/audit' || isAdmin(me)).map(([p, label]) => (
            <a key={p} href={`#${p}`} class={section === p ? 'active' : ''} data-testid={`nav-${p.slice(1)}`}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who" data-testid="who">
          <StreamStatus /> {me.user} ({me.role})
          {me.routes ? ` · routes: ${me.routes.join(', ')}` : ''}
          {me.destinations ? ` · destinations: ${me.destinations.join(', ')}` : ''}{' '}
          <button
            type="button"
            data-testid="logout"
            onClick={async () => {
              const provider = await logout().catch(() => null);
              disconnect();
              setMe(null);
              // A single sign-on session ends at the identity provider too.
              if (provider) location.assign(provider);
              else setPhase('login');
            }}
          >
            Log out
          </button>
        </span>
      </header>
      <Page path={path} me={me} />
    </>
  );
}

render(<App />, document.getElementById('app') as HTMLElement);
