//! The fault suite lives in `tests/faults`: it restarts RabbitMQ and Postgres, kills workers and
//! stops gateways under load, so it runs on its own (`make test-faults`), never beside other tests.
