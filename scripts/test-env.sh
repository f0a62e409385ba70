# Sourced by `make test*`: point the tests at this machine's Postgres and
# RabbitMQ when they answer and nothing else was configured. Otherwise the
# tests start throwaway servers with testcontainers (needs Docker).
_khala_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${KHALA_TEST_DATABASE_URL:-}" ] && _khala_port_open 5432; then
  export KHALA_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres"
fi
if [ -z "${KHALA_TEST_AMQP_URL:-}" ] && _khala_port_open 5672; then
  export KHALA_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/"
fi
