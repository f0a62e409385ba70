// HTTP side of the dashboard: configuration, sign-in (an OpenID provider's ID
// token, or control's dev identity provider), access-token refresh, orgs, sync
// tokens, device sessions, runtime reads (backfill) and the operator's actions
// (runtime's run and worker commands, through control's /api/v1 proxy).
//
// Base URLs default to the page's own origin (control serves the dashboard and
// proxies runtime's /api/v1/*); the query string overrides them:
//   ?control=http://host:8081&runtime=http://host:8082&gateway=ws://host:8084/v1/ws&surface=desktop
//   &oidc_issuer=https://idp.example.com&oidc_client_id=khala-dashboard

const SESSION_KEY = "khala.dashboard.session";
const DEVICE_KEY = "khala.dashboard.device";

/** Base URLs and client settings from window.location (query string wins). */
export function loadConfig(location) {
  const query = new URLSearchParams(location.search);
  const origin = location.origin;
  const trim = (url) => url.replace(/\/+$/, "");
  return {
    control: trim(query.get("control") || origin),
    runtime: trim(query.get("runtime") || query.get("control") || origin),
    gateway: query.get("gateway") || `${origin.replace(/^http/, "ws")}/v1/ws`,
    surface: query.get("surface") || "desktop",
    clientVersion: query.get("client_version") || "1.0.0",
    // An external OpenID provider (authorization code + PKCE; oidc.js), if any.
    oidcIssuer: trim(query.get("oidc_issuer") || ""),
    oidcClientId: query.get("oidc_client_id") || "khala-dashboard",
  };
}

/** A non-2xx answer: `status`, `code`, `message` and the JSON body. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(status ? `${code} (HTTP ${status}): ${message}` : `${code}: ${message}`);
    this.name = "ApiError";
    Object.assign(this, { status, code, body });
  }
}

export class Api {
  constructor(config, { session = globalThis.sessionStorage, local = globalThis.localStorage } = {}) {
    this.config = config;
    this.sessionStore = session;
    this.session = JSON.parse(session.getItem(SESSION_KEY) || "null");
    let device = local.getItem(DEVICE_KEY);
    if (!device) {
      device = `web-${crypto.randomUUID().slice(0, 12)}`;
      local.setItem(DEVICE_KEY, device);
    }
    this.deviceId = device;
    this.refreshing = null;
    this.onSignedOut = () => {};
  }

  get signedIn() {
    return Boolean(this.session);
  }

  #keep(data) {
    this.session = {
      accessToken: data.access_token,
      refreshToken: data.refresh_token,
      sessionId: data.session_id,
      userId: data.user_id,
      expiresAtMs: data.expires_at_ms || 0,
    };
    this.sessionStore.setItem(SESSION_KEY, JSON.stringify(this.session));
  }

  forget() {
    this.session = null;
    this.sessionStore.removeItem(SESSION_KEY);
  }

  async #fetch(method, url, body, auth) {
    const headers = { "content-type": "application/json" };
    if (auth && this.session) headers.authorization = `Bearer ${this.session.accessToken}`;
    let response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      throw new ApiError(0, "unreachable", `cannot reach ${new URL(url).origin} (${error.message})`, null);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || String(text).slice(0, 200), data);
    }
    return data;
  }

  /** An authenticated call; refreshes the access token once on expiry. */
  async call(base, method, path, body) {
    if (this.session && this.session.expiresAtMs && this.session.expiresAtMs - Date.now() < 30000) await this.refresh();
    try {
      return await this.#fetch(method, `${base}${path}`, body, true);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401 || error.code !== "token_expired" || !this.session) throw error;
    }
    await this.refresh();
    return this.#fetch(method, `${base}${path}`, body, true);
  }

  /** Rotate the refresh token (one at a time: refresh tokens are single use). */
  refresh() {
    if (!this.refreshing) {
      const token = this.session && this.session.refreshToken;
      this.refreshing = this.#fetch("POST", `${this.config.control}/api/auth/refresh`, { refresh_token: token }, false)
        .then((data) => this.#keep(data))
        .catch((error) => {
          if (error.status === 401) {
            this.forget();
            this.onSignedOut(error);
          }
          throw error;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  async signInDev(email, name) {
    const { id_token: idToken } = await this.#fetch("POST", `${this.config.control}/api/dev/id-token`, { email, name }, false);
    await this.signInWithIdToken(idToken);
  }

  /** Exchange an identity provider's ID token for a device session. */
  async signInWithIdToken(idToken) {
    const data = await this.#fetch(
      "POST",
      `${this.config.control}/api/auth/session`,
      { id_token: idToken, device_id: this.deviceId, surface: this.config.surface, client_version: this.config.clientVersion },
      false,
    );
    this.#keep(data);
  }

  async signOut() {
    try {
      await this.call(this.config.control, "POST", "/api/auth/logout", {});
    } finally {
      this.forget();
    }
  }

  me() {
    return this.call(this.config.control, "GET", "/api/me");
  }

  createOrg(orgId, name) {
    return this.call(this.config.control, "POST", "/api/orgs", { org_id: orgId, name: name || orgId });
  }

  /** A sync token for every topic the user may read on this surface. */
  async syncToken() {
    const data = await this.call(this.config.control, "POST", "/api/sync/token", {
      topics: [],
      surface: this.config.surface,
      client_version: this.config.clientVersion,
    });
    return { token: data.token, expiresAtMs: data.expires_at_ms || Date.parse(data.expires_at) || 0 };
  }

  listRuns(orgId) {
    return this.call(this.config.runtime, "GET", `/api/v1/runs?org_id=${encodeURIComponent(orgId)}&limit=200`);
  }

  listWorkers(orgId) {
    return this.call(this.config.runtime, "GET", `/api/v1/workers?org_id=${encodeURIComponent(orgId)}&limit=200`);
  }

  // -- actions (each answers what the API answers, or throws its ApiError) --

  createRun(orgId, title) {
    return this.call(this.config.runtime, "POST", "/api/v1/runs", { org_id: orgId, title: title || undefined });
  }

  /** Append one event (`run.output`, `run.completed`, `run.canceled`, ...) to a run. */
  appendRunEvent(runId, type, payload) {
    return this.call(this.config.runtime, "POST", `/api/v1/runs/${encodeURIComponent(runId)}/events`, {
      events: [{ type, payload: payload || {}, idempotency_key: `dash-${crypto.randomUUID()}` }],
    });
  }

  /** Ask a worker for work: a `worker.request.received` event on its stream. */
  requestWork(workerId, payload) {
    return this.call(this.config.runtime, "POST", `/api/v1/workers/${encodeURIComponent(workerId)}/events`, {
      events: [{ type: "worker.request.received", payload: payload || {}, idempotency_key: `dash-${crypto.randomUUID()}` }],
    });
  }

  /** POST /api/v1/workers/{id}/stop or /resume. */
  workerCommand(workerId, command) {
    return this.call(this.config.runtime, "POST", `/api/v1/workers/${encodeURIComponent(workerId)}/${command}`, {});
  }

  sessions() {
    return this.call(this.config.control, "GET", "/api/auth/sessions");
  }

  /** Sign out the device of `sessionId` (that session and the device's others). */
  revokeSession(sessionId) {
    return this.call(this.config.control, "DELETE", `/api/auth/sessions/${encodeURIComponent(sessionId)}`);
  }
}
