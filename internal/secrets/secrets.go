// Package secrets reads a password the way pgha's programs take them: from
// an environment variable or from a file, never from a flag or a config
// file (both end up in process listings, shell histories or backups).
package secrets

import (
	"fmt"
	"os"
	"strings"
)

// FromEnvOrFile returns the secret held by the environment variable
// envName (whose value the caller looked up: envValue) or by the file
// named by the setting fileSetting (path). An empty variable counts as
// unset. A file's trailing line break ("\n" or "\r\n") is dropped. It
// returns "" when neither is set, and an error naming both when both are
// (keep one), or naming the setting and the file when the file cannot be
// read. Errors never hold the secret.
func FromEnvOrFile(envName, envValue, fileSetting, path string) (string, error) {
	switch {
	case envValue != "" && path != "":
		return "", fmt.Errorf("both %s and --%s are set: keep one", envName, fileSetting)
	case envValue != "":
		return envValue, nil
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", fileSetting, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", nil
}
