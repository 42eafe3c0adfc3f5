package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"unicode/utf8"
)

// JSON is a tokenizer loaded from a Hugging Face tokenizer.json with a BPE
// model, of the kinds Llama- and Nemotron-family checkpoints ship: byte
// fallback, Prepend/Replace normalizers or a Metaspace pre-tokenizer, byte-
// level BPE (Llama 3, GPT-2, Qwen2: a Split pre-tokenizer with one of their
// regular expressions and ByteLevel), and added tokens. It follows the tokenizers library: added tokens are split
// out first, each remaining span is normalized and pre-tokenized on its own,
// and merges apply by rank (leftmost first on ties).
type JSON struct {
	vocab   []string
	ids     map[string]int32
	special []bool // added tokens marked special are dropped when decoding
	merges  *pairTable
	ranks   map[uint64]int32 // rank of each merge, keyed like merges

	byteFallback bool
	byteID       [256]int32
	unk          int32
	fuseUnk      bool
	ignoreMerges bool

	norm []textOp
	meta *metaspace
	// byte-level BPE: words are cut by split and written in the byte-level
	// alphabet; prefixSpace adds a space before a span that lacks one.
	byteLevel   bool
	split       splitter
	prefixSpace bool
	added       *trie
	addOpt      map[int32]addedToken
	dec         []decodeOp
	bos         int32
	eos         int32
	hash        string
	pool        sync.Pool
}

type textOp struct {
	kind     string // "prepend" or "replace"
	from, to string
}

type metaspace struct {
	replacement string
	scheme      string // always, first, never
	split       bool
}

type addedToken struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	Special    bool   `json:"special"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	SingleWord bool   `json:"single_word"`
	Normalized bool   `json:"normalized"`
}

type decodeOp struct {
	kind        string // replace, byte_fallback, fuse, strip, metaspace
	from, to    string
	start, stop int
	scheme      string
}

// LoadJSON reads a tokenizer.json.
func LoadJSON(path string) (*JSON, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := ParseJSON(b)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

type rawJSON struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	Decoder       json.RawMessage `json:"decoder"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Model         struct {
		Type         string           `json:"type"`
		Vocab        map[string]int32 `json:"vocab"`
		Merges       json.RawMessage  `json:"merges"`
		UnkToken     *string          `json:"unk_token"`
		ByteFallback bool             `json:"byte_fallback"`
		FuseUnk      bool             `json:"fuse_unk"`
		IgnoreMerges bool             `json:"ignore_merges"`
		Dropout      *float64         `json:"dropout"`
		Prefix       *string          `json:"continuing_subword_prefix"`
		Suffix       *string          `json:"end_of_word_suffix"`
	} `json:"model"`
}

type component struct {
	Type          string          `json:"type"`
	Normalizers   json.RawMessage `json:"normalizers"`
	PreTokenizers json.RawMessage `json:"pretokenizers"`
	Decoders      json.RawMessage `json:"decoders"`
	Prepend       string          `json:"prepend"`
	Pattern       struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content       string `json:"content"`
	Replacement   string `json:"replacement"`
	PrependScheme string `json:"prepend_scheme"`
	AddPrefix     *bool  `json:"add_prefix_space"`
	Split         *bool  `json:"split"`
	UseRegex      *bool  `json:"use_regex"`
	Behavior      string `json:"behavior"`
	Invert        bool   `json:"invert"`
	Start         int    `json:"start"`
	Stop          int    `json:"stop"`
}

// components flattens a possibly nested "Sequence" component.
func components(raw json.RawMessage, list string) ([]component, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	if c.Type != "Sequence" {
		return []component{c}, nil
	}
	var inner json.RawMessage
	switch list {
	case "normalizers":
		inner = c.Normalizers
	case "pretokenizers":
		inner = c.PreTokenizers
	default:
		inner = c.Decoders
	}
	var items []json.RawMessage
	if err := json.Unmarshal(inner, &items); err != nil {
		return nil, err
	}
	var out []component
	for _, it := range items {
		cs, err := components(it, list)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// ParseJSON decodes tokenizer.json text.
func ParseJSON(b []byte) (*JSON, error) {
	var r rawJSON
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if r.Model.Type != "BPE" && !(r.Model.Type == "" && r.Model.Vocab != nil && r.Model.Merges != nil) {
		return nil, fmt.Errorf("tokenizer.json model type %q is not supported (supported: BPE)", r.Model.Type)
	}
	if r.Model.Dropout != nil && *r.Model.Dropout > 0 {
		return nil, fmt.Errorf("BPE dropout is not supported for encoding")
	}
	if (r.Model.Prefix != nil && *r.Model.Prefix != "") || (r.Model.Suffix != nil && *r.Model.Suffix != "") {
		return nil, fmt.Errorf("BPE continuing_subword_prefix / end_of_word_suffix are not supported")
	}
	t := &JSON{ids: map[string]int32{}, unk: -1, bos: -1, eos: -1, byteFallback: r.Model.ByteFallback,
		fuseUnk: r.Model.FuseUnk, ignoreMerges: r.Model.IgnoreMerges, addOpt: map[int32]addedToken{}, hash: hashBytes(b)}
	size := int32(0)
	for tok, id := range r.Model.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("vocab entry %q has negative id %d", tok, id)
		}
		size = max(size, id+1)
	}
	for _, a := range r.AddedTokens {
		size = max(size, a.ID+1)
	}
	t.vocab = make([]string, size)
	t.special = make([]bool, size)
	for tok, id := range r.Model.Vocab {
		t.vocab[id] = tok
		t.ids[tok] = id
	}
	for i := range t.byteID {
		t.byteID[i] = -1
		if id, ok := t.ids[fmt.Sprintf("<0x%02X>", i)]; ok {
			t.byteID[i] = id
		}
	}
	if u := r.Model.UnkToken; u != nil {
		id, ok := t.ids[*u]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocabulary", *u)
		}
		t.unk = id
	}
	if err := t.parseMerges(r.Model.Merges); err != nil {
		return nil, err
	}
	var keys []string
	var vals []int32
	for _, a := range r.AddedTokens {
		if a.Content == "" {
			continue
		}
		t.vocab[a.ID] = a.Content
		t.ids[a.Content] = a.ID
		t.special[a.ID] = a.Special
		t.addOpt[a.ID] = a
		keys, vals = append(keys, a.Content), append(vals, a.ID)
		switch a.Content {
		case "<s>", "<|begin_of_text|>":
			t.bos = a.ID
		case "</s>", "<|end_of_text|>":
			t.eos = a.ID
		}
	}
	if len(keys) > 0 {
		t.added = newTrie(keys, vals)
	}
	if err := t.parseNormalizer(r.Normalizer); err != nil {
		return nil, err
	}
	if err := t.parsePreTokenizer(r.PreTokenizer); err != nil {
		return nil, err
	}
	if err := t.parseDecoder(r.Decoder); err != nil {
		return nil, err
	}
	if t.split != nil && !t.byteLevel {
		return nil, fmt.Errorf("pre-tokenizer Split without ByteLevel is not supported")
	}
	if t.byteLevel && t.meta != nil {
		return nil, fmt.Errorf("pre-tokenizers ByteLevel and Metaspace together are not supported")
	}
	return t, nil
}

func (t *JSON) parseMerges(raw json.RawMessage) error {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("model.merges: %w", err)
	}
	m := make(map[uint64]int32, len(list))
	t.ranks = make(map[uint64]int32, len(list))
	for rank, item := range list {
		var a, b string
		var s string
		if json.Unmarshal(item, &s) == nil {
			parts := strings.SplitN(s, " ", 2)
			if len(parts) != 2 {
				return fmt.Errorf("model.merges[%d] = %q is not \"left right\"", rank, s)
			}
			a, b = parts[0], parts[1]
		} else {
			var pair []string
			if err := json.Unmarshal(item, &pair); err != nil || len(pair) != 2 {
				return fmt.Errorf("model.merges[%d] is neither \"left right\" nor [left, right]", rank)
			}
			a, b = pair[0], pair[1]
		}
		la, oka := t.ids[a]
		lb, okb := t.ids[b]
		nid, okn := t.ids[a+b]
		if !oka || !okb || !okn {
			return fmt.Errorf("model.merges[%d] (%q + %q) refers to tokens missing from the vocabulary", rank, a, b)
		}
		k := uint64(la)<<32 | uint64(uint32(lb))
		if _, dup := m[k]; dup {
			continue // the first (lowest) rank wins, as in the reference
		}
		m[k] = nid
		t.ranks[k] = int32(rank)
	}
	keys := make([]uint64, 0, len(m))
	vals := make([]int32, 0, len(m))
	for k, v := range m {
		keys, vals = append(keys, k), append(vals, v)
	}
	t.merges = newPairTable(keys, vals)
	return nil
}

func (t *JSON) parseNormalizer(raw json.RawMessage) error {
	cs, err := components(raw, "normalizers")
	if err != nil {
		return fmt.Errorf("normalizer: %w", err)
	}
	for _, c := range cs {
		switch c.Type {
		case "Prepend":
			t.norm = append(t.norm, textOp{kind: "prepend", to: c.Prepend})
		case "Replace":
			if c.Pattern.String == nil {
				return fmt.Errorf("normalizer Replace with a regex pattern is not supported")
			}
			t.norm = append(t.norm, textOp{kind: "replace", from: *c.Pattern.String, to: c.Content})
		default:
			return fmt.Errorf("normalizer %q is not supported (supported: Prepend, Replace, Sequence)", c.Type)
		}
	}
	return nil
}

func (t *JSON) parsePreTokenizer(raw json.RawMessage) error {
	cs, err := components(raw, "pretokenizers")
	if err != nil {
		return fmt.Errorf("pre_tokenizer: %w", err)
	}
	for _, c := range cs {
		switch c.Type {
		case "Split":
			pat := ""
			switch {
			case c.Pattern.Regex != nil:
				pat = *c.Pattern.Regex
			case c.Pattern.String != nil:
				return fmt.Errorf("pre-tokenizer Split on the string %q is not supported (supported: the regular expressions of Llama 3, GPT-2 and Qwen2)", *c.Pattern.String)
			}
			sp, ok := knownSplitters[pat]
			if !ok {
				return fmt.Errorf("pre-tokenizer Split with the pattern %q is not supported (supported: the regular expressions of Llama 3 / cl100k, GPT-2 and Qwen2)", pat)
			}
			if c.Behavior != "Isolated" || c.Invert {
				return fmt.Errorf("pre-tokenizer Split with behavior %q (invert %v) is not supported (supported: Isolated)", c.Behavior, c.Invert)
			}
			if t.split != nil {
				return fmt.Errorf("more than one splitting pre-tokenizer is not supported")
			}
			t.split = sp
			continue
		case "ByteLevel":
			t.byteLevel = true
			t.prefixSpace = c.AddPrefix != nil && *c.AddPrefix
			if c.UseRegex == nil || *c.UseRegex {
				if t.split != nil {
					return fmt.Errorf("pre-tokenizer ByteLevel with use_regex after a Split is not supported")
				}
				t.split = splitGPT2
			}
			continue
		case "Metaspace":
		default:
			return fmt.Errorf("pre-tokenizer %q is not supported (supported: Metaspace, ByteLevel, Split with the Llama 3 / GPT-2 / Qwen2 patterns)", c.Type)
		}
		m := &metaspace{replacement: c.Replacement, scheme: c.PrependScheme, split: true}
		if m.replacement == "" {
			m.replacement = spaceSymbol
		}
		if c.Split != nil {
			m.split = *c.Split
		}
		if m.scheme == "" {
			m.scheme = "always"
			if c.AddPrefix != nil && !*c.AddPrefix {
				m.scheme = "never"
			}
		}
		t.meta = m
	}
	return nil
}

func (t *JSON) parseDecoder(raw json.RawMessage) error {
	cs, err := components(raw, "decoders")
	if err != nil {
		return fmt.Errorf("decoder: %w", err)
	}
	for _, c := range cs {
		switch c.Type {
		case "Replace":
			if c.Pattern.String == nil {
				return fmt.Errorf("decoder Replace with a regex pattern is not supported")
			}
			t.dec = append(t.dec, decodeOp{kind: "replace", from: *c.Pattern.String, to: c.Content})
		case "ByteFallback":
			t.dec = append(t.dec, decodeOp{kind: "byte_fallback"})
		case "Fuse":
			t.dec = append(t.dec, decodeOp{kind: "fuse"})
		case "Strip":
			t.dec = append(t.dec, decodeOp{kind: "strip", from: c.Content, start: c.Start, stop: c.Stop})
		case "ByteLevel":
			t.dec = append(t.dec, decodeOp{kind: "byte_level"})
		case "Metaspace":
			scheme := c.PrependScheme
			if scheme == "" {
				scheme = "always"
				if c.AddPrefix != nil && !*c.AddPrefix {
					scheme = "never"
				}
			}
			rep := c.Replacement
			if rep == "" {
				rep = spaceSymbol
			}
			t.dec = append(t.dec, decodeOp{kind: "metaspace", from: rep, scheme: scheme})
		default:
			return fmt.Errorf("decoder %q is not supported (supported: Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel)", c.Type)
		}
	}
	return nil
}

// VocabSize is the number of ids.
func (t *JSON) VocabSize() int { return len(t.vocab) }

// BOS is the <s> added token, or -1.
func (t *JSON) BOS() int32 { return t.bos }

// EOS is the </s> added token, or -1.
func (t *JSON) EOS() int32 { return t.eos }

// Piece returns the vocabulary entry of an id.
func (t *JSON) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.vocab) {
		return ""
	}
	return t.vocab[id]
}

// Hash identifies the file's content.
func (t *JSON) Hash() string { return t.hash }

// Encode returns the ids of text, without BOS or EOS.
func (t *JSON) Encode(text string) []int32 { return t.AppendEncode(nil, text) }

// AppendEncode appends the ids of text to dst.
func (t *JSON) AppendEncode(dst []int32, text string) []int32 {
	start := 0
	for i := 0; i < len(text); {
		if t.added != nil {
			if l, id := t.added.longest(text[i:]); l > 0 {
				a := t.addOpt[id]
				end := i
				if a.LStrip {
					for end > start && isSpace(text[end-1]) {
						end--
					}
				}
				dst = t.encodeSpan(dst, text[start:end], start == 0)
				dst = append(dst, id)
				i += l
				if a.RStrip {
					for i < len(text) && isSpace(text[i]) {
						i++
					}
				}
				start = i
				continue
			}
		}
		i++
	}
	return t.encodeSpan(dst, text[start:], start == 0)
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// encodeSpan normalizes, pre-tokenizes and encodes text between added
// tokens; first tells whether the span starts the input.
func (t *JSON) encodeSpan(dst []int32, s string, first bool) []int32 {
	if s == "" {
		return dst
	}
	for _, op := range t.norm {
		switch op.kind {
		case "prepend":
			if s != "" {
				s = op.to + s
			}
		case "replace":
			s = strings.ReplaceAll(s, op.from, op.to)
		}
	}
	if t.byteLevel {
		if t.prefixSpace && !strings.HasPrefix(s, " ") {
			s = " " + s
		}
		if t.split == nil {
			return t.bpe(dst, byteLevelString(s))
		}
		for len(s) > 0 {
			n := t.split(s)
			dst = t.bpe(dst, byteLevelString(s[:n]))
			s = s[n:]
		}
		return dst
	}
	if m := t.meta; m != nil {
		s = strings.ReplaceAll(s, " ", m.replacement)
		if !strings.HasPrefix(s, m.replacement) && (m.scheme == "always" || m.scheme == "first" && first) {
			s = m.replacement + s
		}
		if m.split {
			// Split before every replacement after the first byte, so each
			// word carries its leading replacement (MergedWithNext).
			for len(s) > 0 {
				end := len(s)
				if k := strings.Index(s[1:], m.replacement); k >= 0 {
					end = k + 1
				}
				dst = t.bpe(dst, s[:end])
				s = s[end:]
			}
			return dst
		}
	}
	return t.bpe(dst, s)
}

type hfSymbol struct {
	id         int32
	begin, end int
	prev, next int
}

type hfMerge struct {
	pos  int32
	rank int32
	id   int32
}

type hfScratch struct {
	syms []hfSymbol
	heap []hfMerge
}

func hfBefore(a, b *hfMerge) bool { return a.rank < b.rank || a.rank == b.rank && a.pos < b.pos }

// bpe encodes one pre-tokenized word.
func (t *JSON) bpe(dst []int32, w string) []int32 {
	if w == "" {
		return dst
	}
	if t.ignoreMerges {
		if id, ok := t.ids[w]; ok {
			return append(dst, id)
		}
	}
	sc, _ := t.pool.Get().(*hfScratch)
	if sc == nil {
		sc = new(hfScratch)
	}
	defer t.pool.Put(sc)
	syms := sc.syms[:0]
	add := func(id int32, b, e int) {
		syms = append(syms, hfSymbol{id: id, begin: b, end: e, prev: len(syms) - 1, next: len(syms) + 1})
	}
	unk, unkBegin := false, 0
	flushUnk := func(end int) {
		if unk {
			add(t.unk, unkBegin, end)
			unk = false
		}
	}
	for i := 0; i < len(w); {
		_, size := utf8.DecodeRuneInString(w[i:])
		c := w[i : i+size]
		if id, ok := t.ids[c]; ok {
			flushUnk(i)
			add(id, i, i+size)
			i += size
			continue
		}
		if t.byteFallback {
			all := true
			for j := 0; j < size; j++ {
				if t.byteID[c[j]] < 0 {
					all = false
				}
			}
			if all {
				flushUnk(i)
				for j := 0; j < size; j++ {
					add(t.byteID[c[j]], i+j, i+j+1)
				}
				i += size
				continue
			}
		}
		if t.unk >= 0 {
			if unk && !t.fuseUnk {
				flushUnk(i)
			}
			if !unk {
				unk, unkBegin = true, i
			}
		}
		i += size
	}
	flushUnk(len(w))
	if len(syms) == 0 {
		sc.syms = syms
		return dst
	}
	syms[len(syms)-1].next = -1
	h := sc.heap[:0]
	push := func(m hfMerge) {
		h = append(h, m)
		for i := len(h) - 1; i > 0; {
			p := (i - 1) / 2
			if !hfBefore(&h[i], &h[p]) {
				break
			}
			h[i], h[p] = h[p], h[i]
			i = p
		}
	}
	pop := func() hfMerge {
		top := h[0]
		h[0] = h[len(h)-1]
		h = h[:len(h)-1]
		for i := 0; ; {
			l := 2*i + 1
			if l >= len(h) {
				break
			}
			m := l
			if r := l + 1; r < len(h) && hfBefore(&h[r], &h[l]) {
				m = r
			}
			if !hfBefore(&h[m], &h[i]) {
				break
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
		return top
	}
	pair := func(pos int) {
		l := &syms[pos]
		if l.next < 0 {
			return
		}
		r := &syms[l.next]
		if id, ok := t.merges.get(l.id, r.id); ok {
			push(hfMerge{pos: int32(pos), rank: t.ranks[uint64(l.id)<<32|uint64(uint32(r.id))], id: id})
		}
	}
	for i := 0; i+1 < len(syms); i++ {
		pair(i)
	}
	for len(h) > 0 {
		top := pop()
		l := &syms[top.pos]
		if l.end == l.begin || l.next < 0 {
			continue
		}
		r := &syms[l.next]
		if id, ok := t.merges.get(l.id, r.id); !ok || id != top.id {
			continue // expired entry
		}
		l.id, l.end = top.id, r.end
		r.begin, r.end = 0, 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = int(top.pos)
		}
		if l.prev >= 0 {
			pair(l.prev)
		}
		pair(int(top.pos))
	}
	for i := 0; i >= 0; i = syms[i].next {
		dst = append(dst, syms[i].id)
	}
	sc.syms, sc.heap = syms, h
	return dst
}

// Decode returns the text of ids, dropping special added tokens, through
// the tokenizer's decoder chain.
func (t *JSON) Decode(ids []int32) string {
	var toks []string
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.vocab) || t.special[id] {
			continue
		}
		toks = append(toks, t.vocab[id])
	}
	for _, op := range t.dec {
		switch op.kind {
		case "replace":
			for i := range toks {
				toks[i] = strings.ReplaceAll(toks[i], op.from, op.to)
			}
		case "byte_fallback":
			toks = byteFallbackDecode(toks)
		case "fuse":
			toks = []string{strings.Join(toks, "")}
		case "strip":
			for i, s := range toks {
				for n := 0; n < op.start && strings.HasPrefix(s, op.from); n++ {
					s = s[len(op.from):]
				}
				for n := 0; n < op.stop && strings.HasSuffix(s, op.from); n++ {
					s = s[:len(s)-len(op.from)]
				}
				toks[i] = s
			}
		case "byte_level":
			// Added tokens are written as they are; everything else is the
			// byte-level alphabet, joined and read back as UTF-8 (invalid
			// sequences become U+FFFD).
			toks = []string{strings.ToValidUTF8(string(byteLevelBytes(strings.Join(toks, ""))), "\uFFFD")}
		case "metaspace":
			for i, s := range toks {
				if i == 0 && op.scheme != "never" {
					s = strings.TrimPrefix(s, op.from)
				}
				toks[i] = strings.ReplaceAll(s, op.from, " ")
			}
		}
	}
	return strings.Join(toks, "")
}

// byteFallbackDecode joins runs of <0xXX> tokens into UTF-8; a run that is
// not valid UTF-8 becomes one U+FFFD per byte.
func byteFallbackDecode(toks []string) []string {
	var out []string
	var bytes []byte
	flush := func() {
		if len(bytes) == 0 {
			return
		}
		if utf8.Valid(bytes) {
			out = append(out, string(bytes))
		} else {
			for range bytes {
				out = append(out, "\uFFFD")
			}
		}
		bytes = bytes[:0]
	}
	for _, s := range toks {
		if b, ok := pieceByte(s); ok {
			bytes = append(bytes, b)
			continue
		}
		flush()
		out = append(out, s)
	}
	flush()
	return out
}
