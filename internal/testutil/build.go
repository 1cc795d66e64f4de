package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
)

var (
	buildMu   sync.Mutex
	buildDir  string
	built     = map[string]string{} // import path -> binary
	buildErrs = map[string]error{}
)

// GoBinary builds the main package importPath (e.g.
// "github.com/pgha/pgha/examples/agent") once per test binary and returns
// the path of the program, so that tests can run it as a process of its own
// (killed, frozen, or run inside a [Netbed] namespace). Call
// [RemoveBinaries] from TestMain after m.Run.
func GoBinary(t TB, importPath string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[importPath]; ok {
		return bin
	}
	if err, ok := buildErrs[importPath]; ok {
		t.Fatalf("testutil.GoBinary: go build %s: %v", importPath, err)
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "pgha-bin-")
		if err != nil {
			t.Fatalf("testutil.GoBinary: %v", err)
		}
		buildDir = d
	}
	bin := filepath.Join(buildDir, path.Base(importPath))
	if out, err := exec.Command("go", "build", "-o", bin, importPath).CombinedOutput(); err != nil {
		buildErrs[importPath] = fmt.Errorf("%v\n%s", err, out)
		t.Fatalf("testutil.GoBinary: go build %s: %v", importPath, buildErrs[importPath])
	}
	built[importPath] = bin
	return bin
}

// RemoveBinaries removes what [GoBinary] built.
func RemoveBinaries() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir = ""
		clear(built)
	}
}
