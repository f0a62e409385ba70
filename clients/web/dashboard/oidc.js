// Sign-in with an external OpenID provider: authorization code flow with PKCE
// (RFC 7636, S256) for a public client, entirely in the browser. The provider's
// ID token is then exchanged with control (POST /api/auth/session), which
// verifies it against the provider's JWKS (KHALA_OIDC_ISSUER, KHALA_OIDC_AUDIENCE
// = the client id). The verifier, state and nonce live in sessionStorage for the
// round trip only; the page's query string (gateway, org, ...) is restored after.

const KEY = "khala.dashboard.oidc";
const CALLBACK_PARAMS = ["code", "state", "iss", "error", "error_description", "session_state"];

function b64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));

/** Where the provider sends the browser back: this page without its query. */
export function redirectUri(location) {
  return `${location.origin}${location.pathname}`;
}

/** Start the sign-in: remember a fresh verifier, state and nonce, and go to the provider. */
export async function beginSignIn(config, location) {
  const response = await fetch(`${config.oidcIssuer}/.well-known/openid-configuration`);
  if (!response.ok) throw new Error(`the identity provider did not answer (HTTP ${response.status})`);
  const discovery = await response.json();
  const verifier = random(32);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const pending = {
    verifier,
    state: random(16),
    nonce: random(16),
    tokenEndpoint: discovery.token_endpoint,
    redirectUri: redirectUri(location),
    clientId: config.oidcClientId,
    query: location.search,
  };
  sessionStorage.setItem(KEY, JSON.stringify(pending));
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: pending.clientId,
    redirect_uri: pending.redirectUri,
    scope: "openid email profile",
    code_challenge: b64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
    state: pending.state,
    nonce: pending.nonce,
  }).toString();
  location.assign(url.toString());
}

/**
 * On the way back, before the page reads its configuration: put the query the page had
 * before the sign-in back into the URL and return the callback (or null when this page
 * load is no callback).
 */
export function takeCallback(location, history) {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(KEY) || "null");
  sessionStorage.removeItem(KEY);
  const restored = new URLSearchParams(pending ? pending.query : location.search);
  for (const name of CALLBACK_PARAMS) restored.delete(name);
  history.replaceState(null, "", `${location.pathname}${restored.size ? `?${restored}` : ""}`);
  return { query, pending };
}

/** The ID token for a callback's code (code + PKCE verifier at the token endpoint). */
export async function completeSignIn(callback) {
  const { query, pending } = callback;
  if (query.has("error")) {
    throw new Error(`the identity provider refused the sign-in: ${query.get("error")} ${query.get("error_description") || ""}`.trim());
  }
  if (!pending || query.get("state") !== pending.state) throw new Error("sign-in state mismatch; sign in again");
  const response = await fetch(pending.tokenEndpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: query.get("code"),
      redirect_uri: pending.redirectUri,
      client_id: pending.clientId,
      code_verifier: pending.verifier,
    }),
  });
  const data = await response.json();
  if (!response.ok || !data.id_token) {
    throw new Error(`the identity provider's token endpoint refused: ${data.error || response.status} ${data.error_description || ""}`.trim());
  }
  const claims = JSON.parse(atob(data.id_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  if (claims.nonce !== pending.nonce) throw new Error("sign-in nonce mismatch; sign in again");
  return data.id_token;
}
