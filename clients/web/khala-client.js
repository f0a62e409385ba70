// Khala browser client module (JSON subprotocol). The implementation lives with
// the dashboard's static files (dashboard/lib/) so that directory can be served
// on its own; import either path.
export * from "./dashboard/lib/khala-client.js";
