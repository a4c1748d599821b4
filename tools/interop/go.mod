// Module interop checks regsandbox's audit-log formats with the Go reference packages
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog. The Python test
// tests/audit/test_interop_go.py writes a fixture and runs `go test` here.
module regsandbox.io/tools/interop

go 1.24.0

require golang.org/x/mod v0.24.0
