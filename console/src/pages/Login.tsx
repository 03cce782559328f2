import { useEffect, useState } from 'preact/hooks';
import { errorMessage, login, loginOptions, SSO_ERRORS, type LoginOptions, type Me } from '../api';
import { ErrorBox } from '../components';

export function Login({ onLogin }: { onLogin: (me: Me) => void }) {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [options, setOptions] = useState<LoginOptions>({ sso: null });

  useEffect(() => {
    // A refused single sign-on comes back as ?sso_error=<word>: say why, then drop it from the URL.
    const params = new URLSearchParams(location.search);
    const sso = params.get('sso_error');
    if (sso) {
      setError(Object.prototype.hasOwnProperty.call(SSO_ERRORS, sso) ? SSO_ERRORS[sso] : 'Single sign-on was refused.');
      history.replaceState(null, '', location.pathname + location.hash);
    }
    loginOptions()
      .then(setOptions)
      .catch(() => setOptions({ sso: null }));
  }, []);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const me = await login(user, password);
      setPassword('');
      onLogin(me);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="login">
      <h1>izhub console</h1>
      <form onSubmit={submit} data-testid="login-form">
        <label>
          User
          <input
            name="user"
            autoComplete="username"
            required
            value={user}
            data-testid="login-user"
            onInput={(e) => setUser((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={password}
            data-testid="login-password"
            onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" disabled={busy} data-testid="login-submit">
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        {options.sso && (
          <a class="button sso" href={options.sso.url} data-testid="login-sso">
            {options.sso.label}
          </a>
        )}
        <ErrorBox error={error} />
      </form>
    </main>
  );
}
