package ha

import (
	"os"
	"strconv"
)

// envInt reads a positive integer from the environment, 0 if unset or
// not one.
func envInt(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil || n < 0 {
		return 0
	}
	return n
}
