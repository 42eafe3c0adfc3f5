// Package diskio writes files so that nothing written is lost or seen
// half-written (a temporary name, fsync, rename, fsync of the directory),
// and moves large files to and from the disk fast: write-back started as a
// file is written, direct I/O (bypassing the page cache) past its first
// 64 MB where the system allows it, and aligned buffers for direct reads.
package diskio

import (
	"bufio"
	"fmt"
	"io"
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
