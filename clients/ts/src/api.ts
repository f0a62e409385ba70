/**
 * KhalaApi: the HTTP side (control's sign-in, sessions, orgs and sync tokens;
 * runtime's runs and workers) with `fetch`. Errors are `ApiError` carrying the
 * `{"error": {"code", "message"}}` body's code (docs/protocol.md §6.2). The
 * access token is refreshed (rotating, single-use refresh token) shortly
 * before it expires, and once after a 401 `token_expired`.
 */
import type { SyncToken } from "./client.js";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(`${status} ${code}: ${message}`);
  }
}

export interface Session {
  accessToken: string;
  refreshToken: string;
  sessionId: string;
  userId: string;
  /** Unix ms when the access token expires. */
  expiresAtMs: number;
  deviceId: string;
  surface: string;
}

export interface KhalaApiOptions {
  controlUrl: string;
  runtimeUrl: string;
  session?: Session;
  /** Called whenever the session changes (sign-in, refresh, sign-out: undefined). */
  onSession?: (session: Session | undefined) => void;
  fetch?: typeof fetch;
  clientVersion?: string;
}

type Json = Record<string, unknown>;

const seg = (id: string) => encodeURIComponent(id);

export class KhalaApi {
  session: Session | undefined;
  private readonly options: KhalaApiOptions;
  private refreshing: Promise<Session> | undefined;

  constructor(options: KhalaApiOptions) {
    this.options = options;
    this.session = options.session;
  }

  private async request(method: string, url: string, body: unknown, token?: string): Promise<any> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await (this.options.fetch ?? fetch)(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code ?? "internal", error.message ?? response.statusText, data);
    }
    return data;
  }

  private async call(method: string, url: string, body?: unknown): Promise<any> {
    let token = await this.accessToken();
    try {
      return await this.request(method, url, body, token);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401 && error.code === "token_expired")) throw error;
      token = (await this.refresh()).accessToken;
      return this.request(method, url, body, token);
    }
  }

  private adopt(data: Json, deviceId: string, surface: string): Session {
    const expiresAt = data.expires_at_ms ?? Date.parse(String(data.expires_at));
    this.session = {
      accessToken: String(data.access_token),
      refreshToken: String(data.refresh_token),
      sessionId: String(data.session_id),
      userId: String(data.user_id),
      expiresAtMs: Number(expiresAt),
      deviceId,
      surface,
    };
    this.options.onSession?.(this.session);
    return this.session;
  }

  // -- control: identity and sessions ----------------------------------------

  /** Sign in with an identity provider's ID token (OIDC); returns the device session. */
  async signIn(idToken: string, deviceId: string, surface: string): Promise<Session> {
    const data = await this.request("POST", `${this.options.controlUrl}/api/auth/session`, {
      id_token: idToken,
      device_id: deviceId,
      surface,
      client_version: this.options.clientVersion ?? "1.0.0",
    });
    return this.adopt(data, deviceId, surface);
  }

  /** Sign in through control's dev identity provider (off unless enabled). */
  async signInDev(email: string, name: string, deviceId: string, surface = "desktop"): Promise<Session> {
    const issued = await this.request("POST", `${this.options.controlUrl}/api/dev/id-token`, { email, name });
    return this.signIn(issued.id_token, deviceId, surface);
  }

  /** Rotate the refresh token (single-flight: refresh tokens are single use). */
  refresh(): Promise<Session> {
    const session = this.session;
    if (!session) return Promise.reject(new ApiError(401, "unauthorized", "not signed in", null));
    this.refreshing ??= this.request("POST", `${this.options.controlUrl}/api/auth/refresh`, {
      refresh_token: session.refreshToken,
    })
      .then((data) => this.adopt(data, session.deviceId, session.surface))
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  /** A currently valid access token (refreshed when under 30 s remain). */
  async accessToken(): Promise<string> {
    if (!this.session) throw new ApiError(401, "unauthorized", "not signed in", null);
    if (this.session.expiresAtMs - Date.now() < 30_000) await this.refresh();
    return this.session.accessToken;
  }

  async logout(): Promise<void> {
    await this.call("POST", `${this.options.controlUrl}/api/auth/logout`, {});
    this.session = undefined;
    this.options.onSession?.(undefined);
  }

  me(): Promise<any> {
    return this.call("GET", `${this.options.controlUrl}/api/me`);
  }

  sessions(): Promise<any> {
    return this.call("GET", `${this.options.controlUrl}/api/auth/sessions`);
  }

  revokeSession(sessionId: string): Promise<any> {
    return this.call("DELETE", `${this.options.controlUrl}/api/auth/sessions/${seg(sessionId)}`);
  }

  createOrg(orgId: string, name: string): Promise<any> {
    return this.call("POST", `${this.options.controlUrl}/api/orgs`, { org_id: orgId, name });
  }

  /** Mint a sync token for `topics` (empty: everything the memberships and surface allow). */
  async syncToken(topics: string[] = []): Promise<SyncToken & { scope: string[] }> {
    const minted = await this.call("POST", `${this.options.controlUrl}/api/sync/token`, {
      topics,
      surface: this.session?.surface,
      client_version: this.options.clientVersion ?? "1.0.0",
    });
    return { token: minted.token, expiresAtMs: Number(minted.expires_at_ms), scope: minted.scope };
  }

  /** A token source for KhalaClient (`token:`). */
  tokenSource(topics: string[] = []): () => Promise<SyncToken> {
    return () => this.syncToken(topics);
  }

  // -- runtime: runs ------------------------------------------------------------

  createRun(orgId: string, runId?: string, title = ""): Promise<any> {
    return this.call("POST", `${this.options.runtimeUrl}/api/v1/runs`, { org_id: orgId, run_id: runId, title });
  }

  appendEvents(runId: string, events: Json[], expectedSeq?: number): Promise<any> {
    const body: Json = { events };
    if (expectedSeq !== undefined) body.expected_seq = expectedSeq;
    return this.call("POST", `${this.options.runtimeUrl}/api/v1/runs/${seg(runId)}/events`, body);
  }

  getRun(runId: string): Promise<any> {
    return this.call("GET", `${this.options.runtimeUrl}/api/v1/runs/${seg(runId)}`);
  }

  /** A page of a run's events after `afterSeq` (backfill). */
  readEvents(runId: string, afterSeq = 0, limit = 1000): Promise<any> {
    return this.call("GET", `${this.options.runtimeUrl}/api/v1/runs/${seg(runId)}/events?after_seq=${afterSeq}&limit=${limit}`);
  }

  listRuns(orgId: string, limit = 100, cursor?: string): Promise<any> {
    const query = new URLSearchParams({ org_id: orgId, limit: String(limit), ...(cursor ? { cursor } : {}) });
    return this.call("GET", `${this.options.runtimeUrl}/api/v1/runs?${query}`);
  }

  // -- runtime: workers ---------------------------------------------------------

  /** Request a worker (create, or reattach to the same worker_id). */
  createWorker(orgId: string, workerId: string): Promise<any> {
    return this.call("POST", `${this.options.runtimeUrl}/api/v1/workers`, { org_id: orgId, worker_id: workerId });
  }

  workerEvents(workerId: string, events: Json[], expectedSeq?: number): Promise<any> {
    const body: Json = { events };
    if (expectedSeq !== undefined) body.expected_seq = expectedSeq;
    return this.call("POST", `${this.options.runtimeUrl}/api/v1/workers/${seg(workerId)}/events`, body);
  }

  /** A page of a worker's events after `afterSeq` (backfill). */
  readWorkerEvents(workerId: string, afterSeq = 0, limit = 1000): Promise<any> {
    return this.call(
      "GET",
      `${this.options.runtimeUrl}/api/v1/workers/${seg(workerId)}/events?after_seq=${afterSeq}&limit=${limit}`,
    );
  }

  private workerAction(workerId: string, action: string, payload?: Json): Promise<any> {
    return this.call("POST", `${this.options.runtimeUrl}/api/v1/workers/${seg(workerId)}/${action}`, payload ? { payload } : {});
  }

  heartbeat(workerId: string, payload?: Json): Promise<any> {
    return this.workerAction(workerId, "heartbeat", payload);
  }

  stopWorker(workerId: string, payload?: Json): Promise<any> {
    return this.workerAction(workerId, "stop", payload);
  }

  resumeWorker(workerId: string, payload?: Json): Promise<any> {
    return this.workerAction(workerId, "resume", payload);
  }

  getWorker(workerId: string): Promise<any> {
    return this.call("GET", `${this.options.runtimeUrl}/api/v1/workers/${seg(workerId)}`);
  }

  listWorkers(orgId: string, limit = 100, cursor?: string): Promise<any> {
    const query = new URLSearchParams({ org_id: orgId, limit: String(limit), ...(cursor ? { cursor } : {}) });
    return this.call("GET", `${this.options.runtimeUrl}/api/v1/workers?${query}`);
  }
}
