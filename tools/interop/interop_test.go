package interop

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// fixture is what tests/audit/test_interop_go.py writes.
type fixture struct {
	Origin      string        `json:"origin"`
	VKey        string        `json:"vkey"`
	SKey        string        `json:"skey"`
	Checkpoint  string        `json:"checkpoint"`
	HashesFile  string        `json:"hashes_file"`
	Receipts    []receipt     `json:"receipts"`
	Consistency []consistency `json:"consistency"`
}

type receipt struct {
	Entry string `json:"entry_b64"`
	Proof string `json:"proof"`
}

type consistency struct {
	OldCheckpoint string   `json:"old_checkpoint"`
	Proof         []string `json:"proof"`
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func load(t *testing.T) (*fixture, string) {
	t.Helper()
	path := os.Getenv("REGSANDBOX_INTEROP_FIXTURE")
	if path == "" {
		t.Skip("REGSANDBOX_INTEROP_FIXTURE is not set; run tests/audit/test_interop_go.py")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return &f, filepath.Dir(path)
}

// openCheckpoint verifies a signed checkpoint with x/mod/sumdb/note and parses its text.
func openCheckpoint(msg []byte, v note.Verifier) (*checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return nil, fmt.Errorf("checkpoint has %d lines", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return nil, err
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return nil, err
	}
	return &checkpoint{origin: lines[0], size: size, root: root}, nil
}

// parseProof reads a c2sp.org/tlog-proof@v1 receipt.
func parseProof(data []byte) (index int64, proof tlog.RecordProof, cp []byte, err error) {
	head, rest, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		return 0, nil, nil, fmt.Errorf("no blank line")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return 0, nil, nil, fmt.Errorf("bad magic %q", lines[0])
	}
	lines = lines[1:]
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return 0, nil, nil, fmt.Errorf("no index line")
	}
	index, err = strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil {
		return 0, nil, nil, err
	}
	for _, l := range lines[1:] {
		h, err := tlog.ParseHash(l)
		if err != nil {
			return 0, nil, nil, err
		}
		proof = append(proof, h)
	}
	return index, proof, rest, nil
}

func hashReader(t *testing.T, path string) tlog.HashReader {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if (x+1)*tlog.HashSize > int64(len(data)) {
				return nil, fmt.Errorf("stored hash %d is past the end of the file", x)
			}
			copy(out[i][:], data[x*tlog.HashSize:])
		}
		return out, nil
	})
}

func TestCheckpointAndReceipts(t *testing.T) {
	f, dir := load(t)
	v, err := note.NewVerifier(f.VKey)
	if err != nil {
		t.Fatalf("x/mod/sumdb/note refuses our verifier key: %v", err)
	}
	cp, err := openCheckpoint([]byte(f.Checkpoint), v)
	if err != nil {
		t.Fatalf("x/mod/sumdb/note refuses our checkpoint: %v", err)
	}
	if cp.origin != f.Origin {
		t.Fatalf("origin %q, want %q", cp.origin, f.Origin)
	}

	// Ed25519 is deterministic: Go signing with our private key must give our bytes.
	s, err := note.NewSigner(f.SKey)
	if err != nil {
		t.Fatalf("x/mod/sumdb/note refuses our signer key: %v", err)
	}
	n, _ := note.Open([]byte(f.Checkpoint), note.VerifierList(v))
	signed, err := note.Sign(&note.Note{Text: n.Text}, s)
	if err != nil {
		t.Fatal(err)
	}
	if string(signed) != f.Checkpoint {
		t.Fatalf("Go signs the checkpoint as\n%s\nwe wrote\n%s", signed, f.Checkpoint)
	}

	// Our stored-hash file has the x/mod/sumdb/tlog layout.
	r := hashReader(t, filepath.Join(dir, f.HashesFile))
	th, err := tlog.TreeHash(cp.size, r)
	if err != nil {
		t.Fatal(err)
	}
	if th != cp.root {
		t.Fatalf("tlog.TreeHash over our stored hashes = %v, checkpoint root %v", th, cp.root)
	}

	if len(f.Receipts) == 0 {
		t.Fatal("fixture has no receipts")
	}
	for _, rc := range f.Receipts {
		entry, err := base64.StdEncoding.DecodeString(rc.Entry)
		if err != nil {
			t.Fatal(err)
		}
		index, proof, cpBytes, err := parseProof([]byte(rc.Proof))
		if err != nil {
			t.Fatalf("receipt: %v", err)
		}
		rcp, err := openCheckpoint(cpBytes, v)
		if err != nil {
			t.Fatalf("receipt %d checkpoint: %v", index, err)
		}
		if err := tlog.CheckRecord(proof, rcp.size, rcp.root, index, tlog.RecordHash(entry)); err != nil {
			t.Fatalf("tlog.CheckRecord refuses our proof for entry %d: %v", index, err)
		}
		bad := append([]byte{}, entry...)
		bad[0] ^= 1
		if tlog.CheckRecord(proof, rcp.size, rcp.root, index, tlog.RecordHash(bad)) == nil {
			t.Fatalf("tlog.CheckRecord accepted a tampered entry %d", index)
		}
		want, err := tlog.ProveRecord(rcp.size, index, r)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(want) != fmt.Sprint(proof) {
			t.Fatalf("entry %d: our proof %v, tlog.ProveRecord %v", index, proof, want)
		}
	}

	if len(f.Consistency) == 0 {
		t.Fatal("fixture has no consistency proofs")
	}
	for _, c := range f.Consistency {
		old, err := openCheckpoint([]byte(c.OldCheckpoint), v)
		if err != nil {
			t.Fatalf("old checkpoint: %v", err)
		}
		var proof tlog.TreeProof
		for _, h := range c.Proof {
			x, err := tlog.ParseHash(h)
			if err != nil {
				t.Fatal(err)
			}
			proof = append(proof, x)
		}
		if err := tlog.CheckTree(proof, cp.size, cp.root, old.size, old.root); err != nil {
			t.Fatalf("tlog.CheckTree refuses our proof %d -> %d: %v", old.size, cp.size, err)
		}
		want, err := tlog.ProveTree(cp.size, old.size, r)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(want) != fmt.Sprint(proof) {
			t.Fatalf("%d -> %d: our proof %v, tlog.ProveTree %v", old.size, cp.size, proof, want)
		}
	}
}
