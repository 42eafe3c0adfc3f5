package tokenizer

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// SentencePiece is a tokenizer loaded from a SentencePiece .model file. It
// encodes exactly as the sentencepiece library does: BPE merges by piece
// score, unigram Viterbi segmentation, byte fallback, user-defined and
// control pieces, and the normalizer's precompiled character map.
type SentencePiece struct {
	pieces []protoPiece
	norm   *normalizer
	model  int
	// pieceID holds normal, user-defined and unused pieces; reserved holds
	// control, unknown and byte pieces.
	pieceID  map[string]int32
	reserved map[string]int32
	byteID   [256]int32
	unkID    int32
	bos, eos int32
	pad      int32

	byteFallback bool
	unkSurface   string
	// unigram
	trie               *trie
	minScore, maxScore float32
	// bpe: (left id, right id) → id of the concatenated piece
	merges *pairTable
	// byteSym is the piece id of each single-byte string, or -1
	byteSym [256]int32
	// isolating marks ASCII bytes that occur in no piece longer than one
	// byte: no merge can cross them, so BPE runs on each side separately.
	isolating [128]bool
	// isolatedID is the id of each isolating byte's one segment.
	isolatedID [128]int32
	// wordCut is set when no piece holds U+2581 after anything but another
	// U+2581 and no piece is unused: then no merge crosses the start of a
	// word (a U+2581 after another character), and BPE runs on each word
	// separately. (Unused pieces are resegmented by the merges seen in the
	// whole run, so they keep runs whole.)
	wordCut bool
	// noRunCache turns the run cache off (for tests and benchmarks).
	noRunCache bool
	// scratch holds reusable encoding buffers and run caches; unlike a
	// sync.Pool it keeps them across garbage collections.
	scratch chan *bpeScratch
	// hash of the model file, for manifests
	hash string
}

// LoadSentencePiece reads a SentencePiece model file.
func LoadSentencePiece(path string) (*SentencePiece, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	sp, err := ParseSentencePiece(b)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return sp, nil
}

// ParseSentencePiece decodes a serialized ModelProto.
func ParseSentencePiece(b []byte) (*SentencePiece, error) {
	m, err := parseModelProto(b)
	if err != nil {
		return nil, fmt.Errorf("not a valid SentencePiece model (corrupt or truncated): %w", err)
	}
	if len(m.pieces) == 0 {
		return nil, fmt.Errorf("not a valid SentencePiece model: it has no pieces")
	}
	switch m.modelType {
	case modelUnigram, modelBPE:
	case modelWord, modelChar:
		return nil, fmt.Errorf("SentencePiece model type %s is not supported (supported: unigram, bpe)", map[int]string{modelWord: "WORD", modelChar: "CHAR"}[m.modelType])
	default:
		return nil, fmt.Errorf("unknown SentencePiece model type %d", m.modelType)
	}
	if m.hasDenormalizer {
		return nil, fmt.Errorf("models with a denormalizer spec are not supported")
	}
	sp := &SentencePiece{pieces: m.pieces, model: m.modelType, pieceID: map[string]int32{}, reserved: map[string]int32{},
		unkID: -1, byteFallback: m.byteFallback, unkSurface: m.unkSurface, bos: -1, eos: -1, pad: -1,
		scratch: make(chan *bpeScratch, max(4, 2*runtime.GOMAXPROCS(0)))}
	for i := range sp.byteID {
		sp.byteID[i] = -1
	}
	var userKeys []string
	var userVals []int32
	sp.minScore, sp.maxScore = math.MaxFloat32, fltMin // as the library starts them
	for i, p := range m.pieces {
		if p.piece == "" {
			return nil, fmt.Errorf("piece %d is empty", i)
		}
		id := int32(i)
		dst := sp.reserved
		switch p.typ {
		case typeNormal, typeUserDefined, typeUnused:
			dst = sp.pieceID
		case typeUnknown, typeControl, typeByte:
		default:
			return nil, fmt.Errorf("piece %d (%q) has unknown type %d", i, p.piece, p.typ)
		}
		if _, dup := dst[p.piece]; dup {
			return nil, fmt.Errorf("piece %q is defined twice", p.piece)
		}
		dst[p.piece] = id
		switch p.typ {
		case typeNormal:
			sp.minScore = min(sp.minScore, p.score)
			sp.maxScore = max(sp.maxScore, p.score)
		case typeUserDefined:
			userKeys, userVals = append(userKeys, p.piece), append(userVals, id)
		case typeUnknown:
			if sp.unkID >= 0 {
				return nil, fmt.Errorf("more than one unknown piece")
			}
			sp.unkID = id
		case typeByte:
			if !m.byteFallback {
				return nil, fmt.Errorf("byte piece %q found although byte_fallback is off", p.piece)
			}
			b, ok := pieceByte(p.piece)
			if !ok {
				return nil, fmt.Errorf("byte piece %q is invalid", p.piece)
			}
			sp.byteID[b] = id
		}
	}
	if sp.unkID < 0 {
		return nil, fmt.Errorf("the model defines no unknown piece")
	}
	if m.byteFallback {
		for b, id := range sp.byteID {
			if id < 0 {
				return nil, fmt.Errorf("byte_fallback is on but there is no piece for byte 0x%02X", b)
			}
		}
	}
	var user *trie
	if len(userKeys) > 0 {
		user = newTrie(userKeys, userVals)
	}
	if sp.norm, err = newNormalizer(m, user); err != nil {
		return nil, err
	}
	if sp.model == modelBPE {
		sp.buildMerges()
	}
	if sp.model == modelUnigram {
		var keys []string
		var vals []int32
		for k, v := range sp.pieceID {
			keys, vals = append(keys, k), append(vals, v)
		}
		sp.trie = newTrie(keys, vals)
	}
	valid := func(id int) int32 {
		if id >= 0 && id < len(m.pieces) {
			return int32(id)
		}
		return -1
	}
	sp.bos, sp.eos, sp.pad = valid(m.bosID), valid(m.eosID), valid(m.padID)
	sp.hash = hashBytes(b)
	return sp, nil
}

func pieceByte(p string) (byte, bool) {
	if len(p) != 6 || !strings.HasPrefix(p, "<0x") || p[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(p[3:5], 16, 8)
	if err != nil || strings.ToUpper(p[3:5]) != p[3:5] {
		return 0, false
	}
	return byte(v), true
}

// VocabSize is the number of pieces.
func (sp *SentencePiece) VocabSize() int { return len(sp.pieces) }

// BOS returns the beginning-of-sequence id, or -1.
func (sp *SentencePiece) BOS() int32 { return sp.bos }

// EOS returns the end-of-sequence id, or -1.
func (sp *SentencePiece) EOS() int32 { return sp.eos }

// Piece returns the text of a piece ("" when out of range).
func (sp *SentencePiece) Piece(id int32) string {
	if id < 0 || int(id) >= len(sp.pieces) {
		return ""
	}
	return sp.pieces[id].piece
}

// Hash identifies the model file's content.
func (sp *SentencePiece) Hash() string { return sp.hash }

// Encode returns the ids of text, without BOS or EOS.
func (sp *SentencePiece) Encode(text string) []int32 {
	return sp.AppendEncode(nil, text)
}

// segment is one piece of the model's segmentation: a byte range of the
// normalized text and its id (unkID when the piece is unknown).
type segment struct {
	begin, end int
	id         int32
}

// AppendEncode appends the ids of text to dst.
func (sp *SentencePiece) AppendEncode(dst []int32, text string) []int32 {
	norm := sp.norm.normalize(text)
	if norm == "" {
		return dst
	}
	sc := sp.getScratch()
	defer sp.putScratch(sc)
	var segs []segment
	if sp.model == modelBPE {
		segs = sp.bpe(norm, sc)
	} else {
		segs = sp.unigram(norm, sc)
	}
	prevUnk := false
	for _, s := range segs {
		unk := s.id == sp.unkID
		switch {
		case unk && sp.byteFallback:
			for i := s.begin; i < s.end; i++ {
				dst = append(dst, sp.byteID[norm[i]])
			}
		case unk && prevUnk:
			// consecutive unknown pieces collapse into one
		default:
			dst = append(dst, s.id)
		}
		prevUnk = unk
	}
	return dst
}

// idOf maps a piece to its id the way the library's PieceToId does.
func (sp *SentencePiece) idOf(p string) int32 {
	if id, ok := sp.reserved[p]; ok {
		return id
	}
	if id, ok := sp.pieceID[p]; ok {
		return id
	}
	return sp.unkID
}

type bpeSymbol struct {
	begin, end int
	prev, next int
	id         int32 // piece id of the symbol's text, or -1 if it is not a piece
	frozen     bool
}

type bpePair struct {
	left, right int32
	score       float32
	size        int32
	id          int32
}

// pairBefore orders the merge agenda: higher score first, leftmost on ties.
func pairBefore(a, b *bpePair) bool {
	return a.score > b.score || a.score == b.score && a.left < b.left
}

// bpeScratch holds one encoding's buffers, reused across calls.
type bpeScratch struct {
	syms  []bpeSymbol
	heap  []bpePair
	segs  []segment
	best  []bestPath
	cache runCache
}

func (sp *SentencePiece) getScratch() *bpeScratch {
	select {
	case sc := <-sp.scratch:
		return sc
	default:
		return new(bpeScratch)
	}
}

// keptScratch bounds, in elements, each buffer a scratch keeps when it is
// put back: one huge document must not pin its buffers (hundreds of MB)
// for the tokenizer's life. The run cache has its own bounds.
const keptScratch = 1 << 16

func (sp *SentencePiece) putScratch(sc *bpeScratch) {
	if cap(sc.syms) > keptScratch {
		sc.syms = nil
	}
	if cap(sc.heap) > keptScratch {
		sc.heap = nil
	}
	if cap(sc.segs) > keptScratch {
		sc.segs = nil
	}
	if cap(sc.best) > keptScratch {
		sc.best = nil
	}
	select {
	case sp.scratch <- sc:
	default: // enough are kept for the encoders that run at once
	}
}

func (s *bpeScratch) push(p bpePair) {
	h := append(s.heap, p)
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !pairBefore(&h[i], &h[parent]) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
	s.heap = h
}

func (s *bpeScratch) pop() bpePair {
	h := s.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && pairBefore(&h[r], &h[l]) {
			m = r
		}
		if !pairBefore(&h[m], &h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	s.heap = h
	return top
}

// buildMerges indexes every piece by the pairs of pieces that concatenate
// to it, so most merge candidates are found by two ids instead of a string.
// Each pair names one concatenation, so the work splits across cores.
func (sp *SentencePiece) buildMerges() {
	for b := range sp.byteSym {
		id, ok := sp.pieceID[string([]byte{byte(b)})]
		if !ok {
			id = -1
		}
		sp.byteSym[b] = id
	}
	for c := range sp.isolating {
		sp.isolating[c] = true
	}
	for p := range sp.pieceID {
		if len(p) > 1 {
			for i := 0; i < len(p); i++ {
				if p[i] < 0x80 {
					sp.isolating[p[i]] = false
				}
			}
		}
	}
	sp.wordCut = true
	for p, id := range sp.pieceID {
		if sp.pieces[id].typ == typeUnused {
			sp.wordCut = false
		}
		for i := 1; i < len(p); i++ {
			if strings.HasPrefix(p[i:], spaceSymbol) && !strings.HasSuffix(p[:i], spaceSymbol) {
				sp.wordCut = false
			}
		}
	}
	var sc bpeScratch
	for c, iso := range sp.isolating {
		if iso {
			sp.isolatedID[c] = sp.bpeRun(string(rune(c)), 0, 1, &sc, nil)[0].id
		}
	}
	workers := runtime.GOMAXPROCS(0)
	keys := make([][]uint64, workers)
	vals := make([][]int32, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := w; id < len(sp.pieces); id += workers {
				p := sp.pieces[id].piece
				if t := sp.pieces[id].typ; t != typeNormal && t != typeUserDefined && t != typeUnused {
					continue
				}
				for i := 1; i < len(p); i++ {
					if !utf8.RuneStart(p[i]) {
						continue
					}
					l, ok := sp.pieceID[p[:i]]
					if !ok {
						continue
					}
					if r, ok := sp.pieceID[p[i:]]; ok {
						keys[w] = append(keys[w], uint64(l)<<32|uint64(r))
						vals[w] = append(vals[w], int32(id))
					}
				}
			}
		}()
	}
	wg.Wait()
	sp.merges = newPairTable(slices.Concat(keys...), slices.Concat(vals...))
}

// mergeID returns the piece formed by two adjacent symbols, or -1.
func (sp *SentencePiece) mergeID(norm string, l, r *bpeSymbol) int32 {
	if l.id >= 0 && r.id >= 0 {
		id, _ := sp.merges.get(l.id, r.id)
		return id
	}
	if id, ok := sp.pieceID[norm[l.begin:r.end]]; ok {
		return id
	}
	return -1
}

// bpe segments the normalized text. Runs between isolating bytes (and
// between words, when wordCut is set) are merged independently, which gives
// the same result as one pass over the whole text (no merge can cross those
// boundaries) at lower cost on long documents, and lets repeated runs come
// from the scratch's cache.
func (sp *SentencePiece) bpe(norm string, sc *bpeScratch) []segment {
	out := sc.segs[:0]
	start := 0
	for i := 0; i < len(norm); i++ {
		c := norm[i]
		switch {
		case c < 0x80 && sp.isolating[c]:
			if i > start {
				out = sp.bpeCached(norm, start, i, sc, out)
			}
			out = append(out, segment{i, i + 1, sp.isolatedID[c]})
			start = i + 1
		case c == spaceSymbol[0] && sp.wordCut && i > start && strings.HasPrefix(norm[i:], spaceSymbol) && !strings.HasSuffix(norm[:i], spaceSymbol):
			out = sp.bpeCached(norm, start, i, sc, out)
			start = i
		}
	}
	if start < len(norm) {
		out = sp.bpeCached(norm, start, len(norm), sc, out)
	}
	sc.segs = out
	return out
}

// bpeCached appends the segments of the run norm[lo:hi], from the cache when
// it holds them.
func (sp *SentencePiece) bpeCached(norm string, lo, hi int, sc *bpeScratch, out []segment) []segment {
	if sp.noRunCache || hi-lo > runCacheMaxRun {
		return sp.bpeRun(norm, lo, hi, sc, out)
	}
	out, ok := sc.cache.get(norm, lo, hi, out)
	if ok {
		return out
	}
	n := len(out)
	out = sp.bpeRun(norm, lo, hi, sc, out)
	sc.cache.put(norm, lo, hi, out[n:])
	return out
}

// bpeRun merges adjacent symbols of norm[lo:hi], best-scoring merged piece
// first (leftmost on ties), starting from characters (user-defined symbols
// are atomic), and appends the segments to out.
func (sp *SentencePiece) bpeRun(norm string, lo, hi int, sc *bpeScratch, out []segment) []segment {
	syms := sc.syms[:0]
	for i := lo; i < hi; {
		l, frozen := 0, false
		if sp.norm.user != nil {
			if ul, _ := sp.norm.user.longest(norm[i:hi]); ul > 0 {
				l, frozen = ul, true
			}
		}
		if l == 0 {
			l = min(hi-i, oneCharLen(norm[i]))
		}
		var id int32 = -1
		if l == 1 {
			id = sp.byteSym[norm[i]]
		} else if v, ok := sp.pieceID[norm[i:i+l]]; ok {
			id = v
		}
		syms = append(syms, bpeSymbol{begin: i, end: i + l, prev: len(syms) - 1, next: len(syms) + 1, id: id, frozen: frozen})
		i += l
	}
	syms[len(syms)-1].next = -1
	sc.syms = syms
	sc.heap = sc.heap[:0]
	var unused map[string][2]string
	add := func(l, r int) {
		if l < 0 || r < 0 || syms[l].frozen || syms[r].frozen {
			return
		}
		id := sp.mergeID(norm, &syms[l], &syms[r])
		if id < 0 {
			return
		}
		sc.push(bpePair{left: int32(l), right: int32(r), score: sp.pieces[id].score, size: int32(syms[r].end - syms[l].begin), id: id})
		if sp.pieces[id].typ == typeUnused {
			if unused == nil {
				unused = map[string][2]string{}
			}
			unused[norm[syms[l].begin:syms[r].end]] = [2]string{norm[syms[l].begin:syms[l].end], norm[syms[r].begin:syms[r].end]}
		}
	}
	merge := func(li, ri int, id int32) {
		l, r := &syms[li], &syms[ri]
		l.end, l.id = r.end, id
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = li
		}
		r.begin, r.end = 0, 0
	}
	for i := 1; i < len(syms); i++ {
		add(i-1, i)
	}
	for len(sc.heap) > 0 {
		top := sc.pop()
		l, r := &syms[top.left], &syms[top.right]
		if l.end == l.begin || r.end == r.begin || int32((l.end-l.begin)+(r.end-r.begin)) != top.size {
			continue // stale: one side was merged away since
		}
		merge(int(top.left), int(top.right), top.id)
		add(l.prev, int(top.left))
		add(int(top.left), l.next)
	}
	var resegment func(begin int, piece string)
	resegment = func(begin int, piece string) {
		id := sp.idOf(piece)
		if id >= 0 && sp.pieces[id].typ == typeUnused {
			if parts, ok := unused[piece]; ok {
				resegment(begin, parts[0])
				resegment(begin+len(parts[0]), parts[1])
				return
			}
		}
		out = append(out, segment{begin, begin + len(piece), id})
	}
	for i := 0; i >= 0; i = syms[i].next {
		s := &syms[i]
		if unused == nil && s.id >= 0 && sp.pieces[s.id].typ != typeUnused {
			out = append(out, segment{s.begin, s.end, s.id})
			continue
		}
		resegment(s.begin, norm[s.begin:s.end])
	}
	return out
}

// oneCharLen is the library's UTF-8 length from the lead byte.
func oneCharLen(b byte) int {
	return int("\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x02\x02\x03\x04"[b>>4])
}

const unkPenalty = 10

// fltMin is C's FLT_MIN, the smallest normal float32: the library starts its
// maximum piece score there, so with all scores negative it stays there.
const fltMin float32 = 1.17549435e-38

// unigram finds the best-scoring segmentation (the library's optimized
// Viterbi, including its float/double arithmetic and tie-breaking).
func (sp *SentencePiece) unigram(norm string, sc *bpeScratch) []segment {
	n := len(norm)
	if cap(sc.best) < n+1 {
		sc.best = make([]bestPath, n+1)
	}
	bp := sc.best[:n+1]
	for i := range bp {
		bp[i] = bestPath{start: -1}
	}
	unkScore := sp.minScore - unkPenalty
	for start := 0; start < n; {
		here := bp[start].score
		mblen := min(oneCharLen(norm[start]), n-start)
		single := false
		sp.trie.prefixes(norm[start:], func(length int, id int32) bool {
			p := &sp.pieces[id]
			if p.typ == typeUnused {
				return true
			}
			t := &bp[start+length]
			var cand float64
			if p.typ == typeUserDefined {
				cand = (float64(float32(length)*sp.maxScore) - 0.1) + float64(here)
			} else {
				cand = float64(p.score) + float64(here)
			}
			if t.start == -1 || cand > float64(t.score) {
				t.score, t.start, t.id = float32(cand), start, id
			}
			if length == mblen {
				single = true
			}
			return true
		})
		if !single {
			t := &bp[start+mblen]
			cand := unkScore + here
			if t.start == -1 || cand > t.score {
				t.score, t.start, t.id = cand, start, sp.unkID
			}
		}
		start += mblen
	}
	out := sc.segs[:0]
	for end := n; end > 0; end = bp[end].start {
		out = append(out, segment{bp[end].start, end, bp[end].id})
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	sc.segs = out
	return out
}

// bestPath is the best segmentation ending at a position (unigram Viterbi).
type bestPath struct {
	id    int32
	score float32
	start int
}

// Decode turns ids back into text: control pieces vanish, byte pieces are
// reassembled into UTF-8 (invalid bytes become U+FFFD), U+2581 becomes a
// space, and the dummy-prefix space at the start is removed.
func (sp *SentencePiece) Decode(ids []int32) string {
	var out strings.Builder
	var bytes []byte
	flush := func() {
		for len(bytes) > 0 {
			r, size := utf8.DecodeRune(bytes)
			if r == utf8.RuneError && size == 1 {
				out.WriteString("\uFFFD")
			} else {
				out.Write(bytes[:size])
			}
			bytes = bytes[size:]
		}
	}
	bosWS, bosWSSeen := true, false
	strip := sp.norm.addDummyPrefix || sp.norm.removeExtraWS
	for _, id := range ids {
		if id < 0 || int(id) >= len(sp.pieces) {
			continue
		}
		p := sp.pieces[id]
		if p.typ == typeByte {
			b, _ := pieceByte(p.piece)
			bytes = append(bytes, b)
			continue
		}
		flush()
		if bosWSSeen || out.Len() > 0 {
			bosWS = false
		}
		bosWSSeen = false
		switch p.typ {
		case typeControl:
			continue
		case typeUnknown:
			out.WriteString(sp.unkSurface)
			continue
		}
		piece := p.piece
		if bosWS && strip {
			if strings.HasPrefix(piece, spaceSymbol) {
				piece = piece[len(spaceSymbol):]
				bosWSSeen = !sp.norm.removeExtraWS
			}
		}
		out.WriteString(strings.ReplaceAll(piece, spaceSymbol, " "))
	}
	flush()
	return out.String()
}

// Piece is a vocabulary entry of a SentencePiece model.
type Piece struct {
	Text  string
	Score float32
	// Type is the ModelProto type: 1 normal, 2 unknown, 3 control,
	// 4 user-defined, 5 unused, 6 byte (the numbering GGUF also uses).
	Type int
}

// Pieces lists the vocabulary in id order.
func (sp *SentencePiece) Pieces() []Piece {
	out := make([]Piece, len(sp.pieces))
	for i, p := range sp.pieces {
		out[i] = Piece{Text: p.piece, Score: p.score, Type: p.typ}
	}
	return out
}

// Unknown returns the id of the unknown piece.
func (sp *SentencePiece) Unknown() int32 { return sp.unkID }

// Pad returns the padding id, or -1.
func (sp *SentencePiece) Pad() int32 { return sp.pad }
