// A real OpenID provider for the console's browser test: npm oidc-provider (from the lockfile),
// in this process, on 127.0.0.1, with its own interactive login and consent pages, RP-initiated
// logout, and one confidential client for the engine. Each account's groups come from `accounts`.
//
// The provider's clock can be set back while it issues tokens (`setTokenClockSkew`), so that the
// engine is handed an ID token that has already expired: what a provider with a wrong clock does.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

/**
 * Starts the provider on `port`. `redirect` and `consoleUrl` are the engine's callback and console
 * URLs, registered for the client; `accounts` maps a login name to its groups.
 */
export async function startProvider({ port, clientId, clientSecret, redirect, consoleUrl, accounts }) {
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirect],
        post_logout_redirect_uris: [consoleUrl],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
    // The groups go in the ID token itself, as Entra ID, Okta and Keycloak can be set to do.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    async findAccount(_ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, name: id, groups: accounts[id] ?? [] };
        },
      };
    },
  });
  provider.on('server_error', (_ctx, err) => console.log(`# oidc-provider server error: ${err.stack}`));

  let skewSeconds = 0;
  provider.use(async (ctx, next) => {
    if (skewSeconds && ctx.path === '/token') {
      const realNow = Date.now;
      Date.now = () => realNow() - skewSeconds * 1000;
      try {
        await next();
      } finally {
        Date.now = realNow;
      }
    } else {
      await next();
    }
  });

  const server = await new Promise((resolve, reject) => {
    const s = provider.listen(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
  return {
    issuer,
    /** Issues tokens as if the provider's clock were `seconds` behind (0: the true time). */
    setTokenClockSkew(seconds) {
      skewSeconds = seconds;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** The engine's `[admin.oidc]` for this provider, mapping groups to roles. */
export function oidcToml({ issuer, clientId, secretEnv, redirect, roles }) {
  const lines = [
    '',
    '[admin.oidc]',
    `issuer = ${JSON.stringify(issuer)}`,
    `client_id = ${JSON.stringify(clientId)}`,
    `client_secret_env = ${JSON.stringify(secretEnv)}`,
    `redirect_url = ${JSON.stringify(redirect)}`,
    'scopes = ["openid", "profile", "groups"]',
    'label = "Sign in with the test provider"',
  ];
  for (const r of roles) {
    lines.push('', '[[admin.oidc.roles]]', `group = ${JSON.stringify(r.group)}`, `role = ${JSON.stringify(r.role)}`);
    if (r.routes) lines.push(`routes = ${JSON.stringify(r.routes)}`);
  }
  return `${lines.join('\n')}\n`;
}
