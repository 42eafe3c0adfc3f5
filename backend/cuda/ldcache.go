package cuda

import (
	"bytes"
	"encoding/binary"
	"os"
	"runtime"
)

// ldCachePath is the system loader's cache, which ldconfig writes from
// /etc/ld.so.conf: the libraries the loader finds by bare name.
const ldCachePath = "/etc/ld.so.cache"

// readLDCache returns the loader cache's libraries for this machine's
// architecture, file name to path, or nil when there is no readable cache
// (not glibc, not Linux).
func readLDCache() map[string][]string {
	data, err := os.ReadFile(ldCachePath)
	if err != nil {
		return nil
	}
	return parseLDCache(data, ldCacheArch())
}

// ldCacheArch is the entry flags of this architecture's 64-bit libraries
// (FLAG_ELF_LIBC6 | the machine's FLAG_*_LIB64, glibc's ldconfig.h).
func ldCacheArch() uint32 {
	switch runtime.GOARCH {
	case "amd64":
		return 0x0303
	case "arm64":
		return 0x0a03
	}
	return 0
}

// parseLDCache decodes glibc's "glibc-ld.so.cache1.1" format: a 48-byte
// header (magic, version, nlibs, len_strings, flags, padding,
// extension_offset, unused) then nlibs 24-byte entries (int32 flags,
// uint32 key and value offsets into the file, uint32 osversion, uint64
// hwcap). Before glibc 2.32 that table followed an "ld.so-1.7.0" table
// of 12-byte entries; both layouts are read. Entries whose flags are not
// arch are skipped (arch 0 keeps every entry).
func parseLDCache(data []byte, arch uint32) map[string][]string {
	const magic = "glibc-ld.so.cache1.1"
	start := 0
	if old := "ld.so-1.7.0"; bytes.HasPrefix(data, []byte(old)) && len(data) >= 16 {
		n := int(binary.LittleEndian.Uint32(data[12:]))
		start = 16 + 12*n
		start = (start + 7) &^ 7 // the new table is aligned like its uint64 field
	}
	if start+48 > len(data) || !bytes.HasPrefix(data[start:], []byte(magic)) {
		return nil
	}
	// String offsets are from the start of the file in the new format.
	str := func(off uint32) (string, bool) {
		if int(off) >= len(data) {
			return "", false
		}
		end := bytes.IndexByte(data[off:], 0)
		if end < 0 {
			return "", false
		}
		return string(data[off : int(off)+end]), true
	}
	n := int(binary.LittleEndian.Uint32(data[start+20:]))
	out := map[string][]string{}
	for i := range n {
		e := start + 48 + 24*i
		if e+24 > len(data) {
			break
		}
		flags := binary.LittleEndian.Uint32(data[e:])
		if arch != 0 && flags&0xffff != arch {
			continue
		}
		key, ok1 := str(binary.LittleEndian.Uint32(data[e+4:]))
		val, ok2 := str(binary.LittleEndian.Uint32(data[e+8:]))
		if ok1 && ok2 {
			out[key] = append(out[key], val)
		}
	}
	return out
}
