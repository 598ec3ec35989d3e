"""What the tests share: the test PKI and the one name it serves (`pki`), configs as dicts
written as TOML (`config`), the edge in-process (`edge`, one listener alone: `listeners`) and as
a child process (`process`), upstreams and a raw HTTP client (`web`, `grpc_echo`), probes from
outside (`probes`), load loops (`load`) and a simulated fleet's volumes (`fleet`).

Test modules import from here and never from one another."""
