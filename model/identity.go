package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// DirIdentity identifies a model directory without reading its weights:
// a hash of config.json and of the names, sizes and modification times of
// its safetensors files. Rewritten weights change it; a copy that keeps the
// files' times (cp -p, rsync -t) or a rename does not.
func DirIdentity(dir string) (string, error) {
	h := sha256.New()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return "", fmt.Errorf("model: %w", err)
	}
	h.Write(b)
	files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	sort.Strings(files)
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", filepath.Base(f), st.Size(), st.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
