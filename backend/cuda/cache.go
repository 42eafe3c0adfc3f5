package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// CacheDir returns the directory compiled kernels are kept in:
// $MINITRON_CACHE/kernels when set, else the user cache directory
// (~/.cache/minitron/kernels on Linux).
func CacheDir() (string, error) {
	if d := os.Getenv("MINITRON_CACHE"); d != "" {
		return filepath.Join(d, "kernels"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cuda: no cache directory for compiled kernels (%w); set MINITRON_CACHE", err)
	}
	return filepath.Join(d, "minitron", "kernels"), nil
}

// cacheKey identifies one compilation: the kernel sources, the target
// architecture, the driver and NVRTC versions, the NVRTC library itself
// (nvrtc.Identity: kernels compiled by one NVRTC are never loaded for
// another of the same version, such as a CPU stand-in), and the compile
// options.
func cacheKey(sourceHash, arch string, driverVersion, nvrtcVersion int, nvrtcIdentity string, opts []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "src %s\narch %s\ndriver %d\nnvrtc %d\nnvrtc-id %s\n", sourceHash, arch, driverVersion, nvrtcVersion, nvrtcIdentity)
	for _, o := range opts {
		fmt.Fprintf(h, "opt %s\n", o)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// cachedCompile returns the image stored under key in dir, or compiles it
// and stores it (atomically: a temporary file renamed into place, so a
// killed process never leaves a torn image). A cache that cannot be
// written is not an error: the image is returned all the same. An empty
// dir means no cache.
func cachedCompile(dir, key, ext string, compile func() ([]byte, error)) (img []byte, hit bool, err error) {
	if dir == "" {
		img, err = compile()
		return img, false, err
	}
	path := filepath.Join(dir, key+ext)
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return b, true, nil
	}
	img, err = compile()
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o755); err == nil {
		if f, err := os.CreateTemp(dir, key+".tmp*"); err == nil {
			_, werr := f.Write(img)
			if werr == nil {
				werr = f.Chmod(0o644) // CreateTemp's 0600 would hide it from other users
			}
			serr := f.Sync()
			cerr := f.Close()
			if werr == nil && serr == nil && cerr == nil {
				if os.Rename(f.Name(), path) != nil {
					os.Remove(f.Name())
				}
			} else {
				os.Remove(f.Name())
			}
		}
	}
	return img, false, nil
}
