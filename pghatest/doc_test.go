package pghatest_test

import (
	"os"
	"strings"
	"testing"
)

// TestDocExample checks that the example in the package documentation is
// example_service_test.go's, so that the documented code is the code that
// runs.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_service_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok1 := strings.Cut(string(src), "// --- example start ---\n\n")
	want, _, ok2 := strings.Cut(after, "\n// --- example end ---")
	if !ok1 || !ok2 {
		t.Fatal("example_service_test.go lost its example markers")
	}
	var got []string
	in := false
	for line := range strings.Lines(string(doc)) {
		switch {
		case strings.HasPrefix(line, "//\t// OrderService"):
			in = true
		case strings.HasPrefix(line, "// # Concurrency"):
			in = false
		}
		if in {
			line = strings.TrimPrefix(strings.TrimPrefix(line, "//"), "\t")
			got = append(got, line)
		}
	}
	if g := strings.TrimSpace(strings.Join(got, "")); g != strings.TrimSpace(want) {
		t.Errorf("doc.go's example differs from example_service_test.go's:\n--- doc.go ---\n%s\n--- example_service_test.go ---\n%s", g, want)
	}
}
