package interop

// TestTiles reads a running audit service's C2SP tlog-tiles with the Go reference
// tile reader: the checkpoint is opened with note.Open, every hash tile is fetched
// through tlog.TileHashReader (which checks each tile against the checkpoint's root),
// and every entry of every entry bundle is proved included with tlog.ProveRecord and
// tlog.CheckRecord. tests/audit_access/test_tiles_go.py starts the service and runs it.

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type tileServer struct {
	t      *testing.T
	prefix string
	token  string
	loaded int
}

// fetch GETs prefix/path with the bearer token; a status other than 200 is an error.
func (s *tileServer) fetch(path string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, s.prefix+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// c2spPath turns Go's sumdb tile path (tile/8/L/N, tile/8/data/N) into a C2SP one.
func c2spPath(tile tlog.Tile) string {
	path := strings.TrimPrefix(tile.Path(), "tile/8/")
	path = strings.Replace(path, "data/", "entries/", 1)
	return "tile/" + path
}

func (s *tileServer) Height() int { return 8 }

func (s *tileServer) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		data, err := s.fetch(c2spPath(tile))
		if err != nil {
			return nil, err
		}
		out[i] = data
		s.loaded++
	}
	return out, nil
}

func (s *tileServer) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func TestTiles(t *testing.T) {
	prefix := os.Getenv("REGSANDBOX_TILES_URL")
	if prefix == "" {
		t.Skip("REGSANDBOX_TILES_URL is not set; run tests/audit_access/test_tiles_go.py")
	}
	server := &tileServer{t: t, prefix: prefix, token: os.Getenv("REGSANDBOX_TILES_TOKEN")}
	verifier, err := note.NewVerifier(os.Getenv("REGSANDBOX_TILES_VKEY"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := server.fetch("checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := note.Open(raw, note.VerifierList(verifier))
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	lines := strings.SplitN(signed.Text, "\n", 4)
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		t.Fatalf("checkpoint root %q: %v", lines[2], err)
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	hashes := tlog.TileHashReader(tree, server)
	computed, err := tlog.TreeHash(size, hashes)
	if err != nil {
		t.Fatalf("tree hash from tiles: %v", err)
	}
	if computed != root {
		t.Fatalf("tiles give root %v, the checkpoint says %v", computed, root)
	}

	index := int64(0)
	for n := int64(0); n*256 < size; n++ {
		width := size - n*256
		if width > 256 {
			width = 256
		}
		bundle, err := server.fetch(c2spPath(tlog.Tile{H: 8, L: -1, N: n, W: int(width)}))
		if err != nil {
			t.Fatal(err)
		}
		for len(bundle) > 0 {
			if len(bundle) < 2 {
				t.Fatalf("bundle %d: truncated length", n)
			}
			length := int(binary.BigEndian.Uint16(bundle))
			if len(bundle) < 2+length {
				t.Fatalf("bundle %d: truncated entry", n)
			}
			entry := bundle[2 : 2+length]
			bundle = bundle[2+length:]
			proof, err := tlog.ProveRecord(size, index, hashes)
			if err != nil {
				t.Fatalf("prove %d: %v", index, err)
			}
			if err := tlog.CheckRecord(proof, size, root, index, tlog.RecordHash(entry)); err != nil {
				t.Fatalf("entry %d: %v", index, err)
			}
			index++
		}
	}
	if index != size {
		t.Fatalf("the bundles hold %d entries, the checkpoint %d", index, size)
	}
	t.Logf("verified %d entries and %d hash tiles", index, server.loaded)
}
