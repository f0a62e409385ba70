// Helpers of the live tests: sign in through control's dev identity provider,
// create an org and a run, append events, mint sync tokens (plain fetch).
export const LIVE = process.env.KHALA_TS_CONTROL_URL
  ? {
      control: process.env.KHALA_TS_CONTROL_URL,
      runtime: process.env.KHALA_TS_RUNTIME_URL,
      gateway: process.env.KHALA_TS_GATEWAY_URL,
    }
  : undefined;

async function call(method, url, token, body) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

/** A signed-in user (desktop surface) with an org of their own. */
export async function signIn(tag) {
  const { id_token } = await call("POST", `${LIVE.control}/api/dev/id-token`, null, {
    email: `ts-${tag}@example.com`,
    name: `TS ${tag}`,
  });
  const session = await call("POST", `${LIVE.control}/api/auth/session`, null, {
    id_token,
    device_id: `ts-${tag}`,
    surface: "desktop",
    client_version: "1.0.0",
  });
  const org = `ts-${tag}`;
  await call("POST", `${LIVE.control}/api/orgs`, session.access_token, { org_id: org, name: org });
  const access = session.access_token;
  return {
    org,
    access,
    /** A started run: seqs 1 (run.created) and 2 (run.started). */
    async createRun(runId) {
      await call("POST", `${LIVE.runtime}/api/v1/runs`, access, { org_id: org, run_id: runId, title: runId });
      return call("POST", `${LIVE.runtime}/api/v1/runs/${runId}/events`, access, { events: [{ type: "run.started" }] });
    },
    async append(runId, texts) {
      const events = texts.map((text) => ({ type: "run.output", payload: { text } }));
      return call("POST", `${LIVE.runtime}/api/v1/runs/${runId}/events`, access, { events });
    },
    /** A token source for KhalaClient; counts mints. */
    tokens(topics) {
      const source = async () => {
        source.minted += 1;
        const minted = await call("POST", `${LIVE.control}/api/sync/token`, access, {
          topics,
          surface: "desktop",
          client_version: "1.0.0",
        });
        return { token: minted.token, expiresAtMs: Number(minted.expires_at_ms) };
      };
      source.minted = 0;
      return source;
    },
  };
}

/** Resolves when `predicate()` holds (polled), rejects after `ms`. */
export async function until(predicate, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
