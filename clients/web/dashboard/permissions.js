// What the signed-in user may do from the dashboard, so the page can disable the
// rest. A mirror of runtime's authorization (services/runtime/.../domain/access.py:
// the surface matrix first, then the org role) for display only: the API
// decides, and a refusal it sends (403 `forbidden`, `forbidden_surface`) is
// shown to the operator as is.

/** Org roles, weakest first (control's roles.py; runtime numbers them the same way). */
const ROLE_RANK = { viewer: 1, member: 2, admin: 3, owner: 4 };

/** The dashboard's actions: the runtime action each needs and the weakest role allowed. */
export const ACTIONS = {
  createRun: { runtime: "write", role: "member", text: "create runs" },
  appendRun: { runtime: "write", role: "member", text: "append events to runs" },
  stopRun: { runtime: "write", role: "member", text: "stop runs" },
  requestWork: { runtime: "write", role: "member", text: "request work from workers" },
  stopWorker: { runtime: "stop", role: "member", text: "stop or resume workers" },
};

// Which runtime writes each client surface may make at all (runtime's surface matrix).
const SURFACE_WRITES = {
  web: ["write", "stop"],
  desktop: ["write", "stop"],
  ios: ["stop"],
  onyx: [],
};

/**
 * Whether `role` on `surface` may do `action` (a key of ACTIONS); `why` says
 * what is missing when not.
 */
export function permission(action, role, surface) {
  const rule = ACTIONS[action];
  if (!(SURFACE_WRITES[surface] || []).includes(rule.runtime)) {
    return { allowed: false, why: `a ${surface} client may not ${rule.text}` };
  }
  if ((ROLE_RANK[role] || 0) < ROLE_RANK[rule.role]) {
    return { allowed: false, why: `your role (${role || "none"}) may not ${rule.text}: it takes ${rule.role} or above` };
  }
  return { allowed: true, why: "" };
}
