package tokenizer

import "strings"

// BPE runs (the stretches between isolating bytes, and between words when
// the vocabulary allows it) are segmented independently of each other, so
// a run's segments depend on its bytes alone. Source code and prose repeat
// the same runs (keywords, identifiers, indentation) endlessly; runCache
// remembers them. Each scratch owns one cache, so lookups take no lock.

const (
	// runCacheMaxRun is the longest run that is cached; longer runs seldom
	// repeat.
	runCacheMaxRun = 64
	// runCacheMaxEntries and runCacheMaxBytes bound one generation of a
	// cache. The byte count includes an estimate of the index's own
	// overhead per entry.
	runCacheMaxEntries = 1 << 15
	runCacheMaxBytes   = 2 << 20
	runCacheEntryBytes = 48
)

// runSeg is one cached segment: its end relative to the run's start (the
// segments of a run tile it, so each begins where the previous one ends)
// and its id.
type runSeg struct {
	end, id int32
}

// runSpan locates a run's segments in runGen.segs.
type runSpan struct {
	off, n uint32
}

// runGen is one generation of cached runs.
type runGen struct {
	index map[string]runSpan
	segs  []runSeg
	bytes int
}

// runCache holds two generations: new runs go into cur; when cur is full it
// becomes old and cur starts empty; a run found in old moves to cur. So the
// runs in use survive while the memory stays bounded (two generations).
type runCache struct {
	cur, old runGen
}

// get appends the cached segments of norm[lo:hi] to out; ok is false when
// the run is not cached.
func (c *runCache) get(norm string, lo, hi int, out []segment) ([]segment, bool) {
	g := &c.cur
	sp, ok := g.index[norm[lo:hi]]
	if !ok {
		g = &c.old
		if sp, ok = g.index[norm[lo:hi]]; !ok {
			return out, false
		}
	}
	n := len(out)
	begin := lo
	for _, s := range g.segs[sp.off : sp.off+sp.n] {
		end := lo + int(s.end)
		out = append(out, segment{begin, end, s.id})
		begin = end
	}
	if g == &c.old {
		c.put(norm, lo, hi, out[n:])
	}
	return out, true
}

// put remembers segs, the segments of the run norm[lo:hi].
func (c *runCache) put(norm string, lo, hi int, segs []segment) {
	size := hi - lo + 8*len(segs) + runCacheEntryBytes
	if len(c.cur.index) >= runCacheMaxEntries || c.cur.bytes+size > runCacheMaxBytes {
		c.cur, c.old = c.old, c.cur
		clear(c.cur.index)
		c.cur.segs, c.cur.bytes = c.cur.segs[:0], 0
	}
	g := &c.cur
	if g.index == nil {
		g.index = make(map[string]runSpan)
	}
	off := len(g.segs)
	for _, s := range segs {
		g.segs = append(g.segs, runSeg{int32(s.end - lo), s.id})
	}
	g.index[strings.Clone(norm[lo:hi])] = runSpan{uint32(off), uint32(len(segs))}
	g.bytes += size
}
