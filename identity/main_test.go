package identity

import (
	"testing"

	"github.com/meshguard/meshguard/internal/leakcheck"
)

// TestMain fails the package when goroutines outlive its tests.
func TestMain(m *testing.M) { leakcheck.Main(m) }
