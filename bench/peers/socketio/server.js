// Socket.IO 4 peer for bench/run.py: rooms per topic, connectionStateRecovery on.
// Clients emit "subscribe" (array of topics) to join rooms; a publisher emits
// "publish" (topic, seq, payload) and the server broadcasts "frame" (topic, seq,
// payload) to the room. With connectionStateRecovery a client that reconnects
// within maxDisconnectionDuration gets the packets it missed and its rooms back.
// Usage: node server.js PORT   (binds 127.0.0.1 only; prints "ready PORT" when listening)
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = parseInt(process.argv[2] || "0", 10);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 1e6,
  pingInterval: 25000,
  pingTimeout: 20000,
  connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true },
});

io.on("connection", (socket) => {
  socket.on("subscribe", (topics, ack) => {
    if (Array.isArray(topics)) for (const t of topics) socket.join(String(t));
    if (typeof ack === "function") ack("ok");
  });
  socket.on("publish", (topic, seq, payload) => {
    io.to(String(topic)).emit("frame", topic, seq, payload);
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`ready ${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
