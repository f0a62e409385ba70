// A real OpenID provider for tests/e2e/test_dashboard_oidc.py: node oidc-provider 8.x
// with its development login and consent pages. Usage:
//   node provider.mjs <port> <redirect_uri>
// prints "ready <issuer>" once listening. Any login name signs in as
// <login>@example.com; the public client `khala-dashboard` must use PKCE (S256).
import Provider from "oidc-provider";

const [port, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "khala-dashboard",
      token_endpoint_auth_method: "none",
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  pkce: { required: () => true, methods: ["S256"] },
  claims: { openid: ["sub"], email: ["email"], profile: ["name"] },
  conformIdTokenClaims: false,
  clientBasedCORS: () => true,
  cookies: { keys: ["khala-e2e-only"] },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.com`, name: `User ${id}` };
      },
    };
  },
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
