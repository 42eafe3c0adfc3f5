// Package diskio writes files so that nothing written is lost or seen
// half-written (a temporary name, fsync, rename, fsync of the directory),
// and moves large files to and from the disk fast: write-back started as a
// file is written, direct I/O (bypassing the page cache) past its first
// 64 MB where the system allows it, and aligned buffers for direct reads.
package diskio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// WriteAtomic writes a file so that readers see either the old content or
// the complete new one: it writes a temporary file in the same directory,
// fsyncs it, renames it over path and fsyncs the directory.
func WriteAtomic(path string, write func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	sw := &streamWriter{f: tmp}
	bw := bufio.NewWriterSize(sw, 1<<20)
	if err = write(bw); err != nil {
		sw.finish()
		return err
	}
	if err = bw.Flush(); err == nil {
		err = sw.finish()
	}
	if err != nil {
		sw.finish()
		return fmt.Errorf("diskio: writing %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("diskio: syncing %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("diskio: closing %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that renames inside it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !isUnsupportedSync(err) {
		return fmt.Errorf("diskio: syncing directory %s: %w", dir, err)
	}
	return nil
}

func isUnsupportedSync(err error) bool {
	return strings.Contains(err.Error(), "invalid argument") || strings.Contains(err.Error(), "not supported")
}

// WriteFileAtomic writes data to path atomically.
func WriteFileAtomic(path string, data []byte) error {
	return WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// ErrExist is wrapped by WriteDir when it may not replace what is there.
var ErrExist = fs.ErrExist

// Vacant returns nil when a directory can be written at dir without
// replacing anything: nothing is there, or an empty directory.
func Vacant(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	if st.IsDir() {
		if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
			return nil
		}
	}
	return fmt.Errorf("diskio: %s already exists; remove it or choose another output: %w", dir, ErrExist)
}

// WriteDir builds a directory atomically: fill writes its files into a
// temporary sibling, which is fsynced and renamed to dir, so dir is either
// absent (or as it was) or complete. With replace, an existing dir is
// replaced (renamed to dir.old first, which CleanTemporary puts back if
// the process dies in between); without it, WriteDir refuses anything but
// an empty directory (Vacant). The directory is readable by others (0755).
func WriteDir(dir string, replace bool, fill func(tmp string) error) error {
	dir = filepath.Clean(dir)
	if !replace {
		if err := Vacant(dir); err != nil {
			return err
		}
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	fail := func(err error) error {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fail(fmt.Errorf("diskio: %w", err))
	}
	if err := fill(tmp); err != nil {
		return fail(err)
	}
	if err := SyncDir(tmp); err != nil {
		return fail(err)
	}
	if _, err := os.Stat(dir); err == nil {
		if !replace {
			os.Remove(dir) // the empty directory Vacant allowed
		} else {
			old := dir + ".old"
			os.RemoveAll(old)
			if err := os.Rename(dir, old); err != nil {
				return fail(fmt.Errorf("diskio: %w", err))
			}
			defer os.RemoveAll(old)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fail(fmt.Errorf("diskio: %w", err))
	}
	return SyncDir(parent)
}

// CleanTemporary removes what interrupted writes left in dir: temporary
// files and directories of WriteAtomic and WriteDir, and puts back a
// directory WriteDir was replacing when the new one never took its place.
func CleanTemporary(dir string) {
	tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	for _, m := range tmps {
		os.RemoveAll(m)
	}
	olds, _ := filepath.Glob(filepath.Join(dir, "*.old"))
	for _, m := range olds {
		orig := strings.TrimSuffix(m, ".old")
		if _, err := os.Stat(orig); errors.Is(err, fs.ErrNotExist) {
			os.Rename(m, orig)
			continue
		}
		os.RemoveAll(m)
	}
}

// CopyFile copies src to dst atomically (dst readable by others).
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("diskio: %w", err)
	}
	defer in.Close()
	return WriteAtomic(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
