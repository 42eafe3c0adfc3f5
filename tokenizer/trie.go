package tokenizer

import "sort"

// trie is a compact byte trie: each node's children are a sorted run of
// (label, child) edges; the root's children are a direct table.
type trie struct {
	root   [256]int32
	first  []int32 // first edge of each node
	count  []int32 // number of edges of each node
	value  []int32 // value of the key ending at the node, or -1
	labels []byte
	kids   []int32
}

// newTrie builds a trie mapping keys to values; keys must be distinct.
func newTrie(keys []string, vals []int32) *trie {
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
	sk := make([]string, len(keys))
	sv := make([]int32, len(keys))
	for i, j := range idx {
		sk[i], sv[i] = keys[j], vals[j]
	}
	t := &trie{}
	root := t.node()
	t.build(sk, sv, root, 0, len(sk), 0)
	for i := range t.root {
		t.root[i] = -1
	}
	for e := t.first[root]; e < t.first[root]+t.count[root]; e++ {
		t.root[t.labels[e]] = t.kids[e]
	}
	return t
}

func (t *trie) node() int32 {
	t.first = append(t.first, 0)
	t.count = append(t.count, 0)
	t.value = append(t.value, -1)
	return int32(len(t.value) - 1)
}

// build adds keys[lo:hi], which share their first depth bytes, below node.
func (t *trie) build(keys []string, vals []int32, node int32, lo, hi, depth int) {
	if lo < hi && len(keys[lo]) == depth {
		t.value[node] = vals[lo]
		lo++
	}
	start := int32(len(t.labels))
	type run struct{ lo, hi int }
	var runs []run
	for i := lo; i < hi; {
		c := keys[i][depth]
		j := i
		for j < hi && keys[j][depth] == c {
			j++
		}
		t.labels = append(t.labels, c)
		t.kids = append(t.kids, -1)
		runs = append(runs, run{i, j})
		i = j
	}
	t.first[node], t.count[node] = start, int32(len(runs))
	for k, r := range runs {
		child := t.node()
		t.kids[start+int32(k)] = child
		t.build(keys, vals, child, r.lo, r.hi, depth+1)
	}
}

// child returns the child of node along byte c, or -1.
func (t *trie) child(node int32, c byte) int32 {
	lo, hi := t.first[node], t.first[node]+t.count[node]
	for hi-lo > 8 {
		mid := (lo + hi) / 2
		if t.labels[mid] < c {
			lo = mid + 1
		} else {
			hi = mid + 1 // mid may be the match
		}
	}
	for e := lo; e < hi; e++ {
		if t.labels[e] == c {
			return t.kids[e]
		}
		if t.labels[e] > c {
			break
		}
	}
	return -1
}

// prefixes calls f(length, value) for every key that is a prefix of s, in
// increasing length, until f returns false.
func (t *trie) prefixes(s string, f func(length int, value int32) bool) {
	if len(s) == 0 {
		return
	}
	n := t.root[s[0]]
	for i := 1; n >= 0; i++ {
		if v := t.value[n]; v >= 0 && !f(i, v) {
			return
		}
		if i == len(s) {
			return
		}
		n = t.child(n, s[i])
	}
}

// longest returns the length and value of the longest key prefixing s.
func (t *trie) longest(s string) (int, int32) {
	best, val := 0, int32(-1)
	t.prefixes(s, func(l int, v int32) bool { best, val = l, v; return true })
	return best, val
}
