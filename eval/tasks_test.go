package eval

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testdata = "../testdata/eval"

// The expected requests below were worked out by hand from
// lm-evaluation-harness v0.4.8's task definitions (the YAMLs and utils
// cited in tasks.go) applied to the rows of testdata/eval, with the
// few-shot draws of random.Random(1234).sample that CPython 3.11.7 gives:
//
//	r = random.Random(1234); r.sample(range(5), 3), r.sample(range(5), 3)  # HellaSwag: [3, 0, 4] [0, 4, 2]
//	r = random.Random(1234); r.sample(range(4), 3), r.sample(range(4), 3)  # Winogrande: [3, 0, 2] [0, 2, 3]
//	r = random.Random(1234); r.sample(range(3), 2), r.sample(range(3), 2)  # ARC: [1, 0] [0, 2]
//
// HellaSwag and Winogrande draw one more than the shots and drop the
// evaluated document (their configs name neither fewshot_split nor
// test_split); ARC draws exactly the shots.
type wantDoc struct {
	index int
	gold  int
	ctx   []string // one context for all choices, or one per choice
	conts []string
}

const (
	hsShot3  = "Painting : A kid dips a brush in paint. The kid paints a picture.\n\n" // " [header]" removed, "[substeps]" and the double space it leaves too
	hsShot0  = "Baking: A chef mixes flour and eggs. Then she kneads the dough.\n\n"   // ctx_b "then she" capitalized
	hsShot4  = "Swimming: A girl jumps into the pool. She swims to the other side.\n\n"
	wgShot0  = "Sarah lent her umbrella to Maria because Maria was going out in the rain.\n\n"
	wgShot2  = "The cup fell off the shelf because the shelf was slippery.\n\n"
	wgShot3  = "Anna called Ben because Anna needed help with homework.\n\n"
	arcShot0 = "Question: What color is the sky on a clear day?\nAnswer: blue\n\n"
	arcShot1 = "Question: Which is a mammal?\nAnswer: whale\n\n"
	arcShot2 = "Question: What do bees make?\nAnswer: honey\n\n"
	bioDesc  = "The following are multiple choice questions (with answers) about high school biology.\n\n"
	algDesc  = "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
	bioShots = "What carries genetic information?\nA. DNA\nB. Fat\nC. Salt\nD. Water\nAnswer: A\n\n" +
		"Where does photosynthesis occur?\nA. Chloroplast\nB. Nucleus\nC. Vacuole\nD. Wall\nAnswer: A\n\n"
	algShots = "What is the identity element of addition in Z?\nA. 0\nB. 1\nC. -1\nD. 2\nAnswer: A\n\n" +
		"How many elements does Z_2 have?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
	bioQ0 = "What is the basic unit of life?\nA. The atom\nB. The cell\nC. The organ\nD. The tissue\nAnswer:" // question stripped
	algQ1 = "Find the order of the group Z_4.\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
	bioQ2 = "Which organelle makes ATP?\nA. Nucleus\nB. Ribosome\nC. Mitochondrion\nD. Golgi body\nAnswer:"
)

var letters = []string{" A", " B", " C", " D"}

var taskCases = []struct {
	task  string
	opt   BuildOptions
	chars [][]int // ChoiceChars of some docs (nil: unchecked)
	want  []wantDoc
}{
	{"hellaswag", BuildOptions{Shots: 2}, [][]int{{25, 28, 11, 34}}, []wantDoc{
		{0, 0, []string{hsShot3 + hsShot0 + "Making tea: A woman fills a kettle with water. She puts it on the stove"},
			// " [title]" becomes ". ", then double spaces single; an ending
			// is stripped before "[step]" is removed, so its space stays.
			[]string{" and waits for it to boil.", " then throws the kettle. out.", " and dances.", "  She pours the water on the floor."}},
		{1, 2, []string{hsShot0 + hsShot4 + "Washing face: A boy splashes water on his face."}, // empty ctx_a: "  " collapses
			[]string{" He dries it with a towel.", " He eats the towel.", " He rinses and dries his face. with a towel.", " The water turns into juice."}},
	}},
	{"winogrande", BuildOptions{Shots: 2}, nil, []wantDoc{
		// Draws train rows 3, 0, 2; row 0 equals this document and is dropped.
		{0, 1, []string{wgShot3 + wgShot2 + "Sarah lent her umbrella to Maria because Sarah", wgShot3 + wgShot2 + "Sarah lent her umbrella to Maria because Maria"},
			[]string{" was going out in the rain.", " was going out in the rain."}},
		{1, 0, []string{wgShot0 + wgShot2 + "The ice melted on the table because the table", wgShot0 + wgShot2 + "The ice melted on the table because the ice"},
			[]string{" was warm.", " was warm."}},
	}},
	{"winogrande", BuildOptions{Shots: 0}, nil, []wantDoc{
		{0, 1, []string{"Sarah lent her umbrella to Maria because Sarah", "Sarah lent her umbrella to Maria because Maria"}, []string{" was going out in the rain.", " was going out in the rain."}},
		{1, 0, []string{"The ice melted on the table because the table", "The ice melted on the table because the ice"}, []string{" was warm.", " was warm."}},
	}},
	{"arc_challenge", BuildOptions{Shots: 2}, [][]int{{6, 14, 6, 4}, {1, 1, 1}}, []wantDoc{
		{0, 1, []string{arcShot1 + arcShot0 + "Question: Which gas do plants take in from the air?\nAnswer:"}, []string{" oxygen", " carbon dioxide", " helium", " neon"}},
		{1, 1, []string{arcShot0 + arcShot2 + "Question: What is 2 + 2?\nAnswer:"}, []string{" 3", " 4", " 5"}},
	}},
	{"mmlu", BuildOptions{Shots: 2}, [][]int{{1, 1, 1, 1}}, []wantDoc{
		{0, 1, []string{bioDesc + bioShots + bioQ0}, letters},
		{1, 3, []string{algDesc + algShots + algQ1}, letters},
		{2, 2, []string{bioDesc + bioShots + bioQ2}, letters},
	}},
	{"mmlu", BuildOptions{Shots: 0, Limit: 1}, nil, []wantDoc{ // the limit is per subject
		{0, 1, []string{bioDesc + bioQ0}, letters},
		{1, 3, []string{algDesc + algQ1}, letters},
	}},
}

// TestTaskRequests: the requests of every task, from JSON lines and from
// Parquet files in the hub's column types, are the harness's.
func TestTaskRequests(t *testing.T) {
	for _, format := range []string{"jsonl", "parquet"} {
		for _, c := range taskCases {
			t.Run(fmt.Sprintf("%s/%s/%d-shot/limit%d", format, c.task, c.opt.Shots, c.opt.Limit), func(t *testing.T) {
				d, err := OpenDataset(filepath.Join(testdata, format, c.task))
				if err != nil {
					t.Fatal(err)
				}
				docs, err := tasks[c.task].Build(context.Background(), d, c.opt)
				if err != nil {
					t.Fatal(err)
				}
				if len(docs) != len(c.want) {
					t.Fatalf("%d docs, want %d", len(docs), len(c.want))
				}
				for i, w := range c.want {
					doc := docs[i]
					if doc.Index != w.index || doc.Gold != w.gold || len(doc.Requests) != len(w.conts) {
						t.Fatalf("doc %d: index %d gold %d with %d requests, want %d, %d, %d", i, doc.Index, doc.Gold, len(doc.Requests), w.index, w.gold, len(w.conts))
					}
					for r, rq := range doc.Requests {
						ctx := w.ctx[0]
						if len(w.ctx) > 1 {
							ctx = w.ctx[r]
						}
						if rq.Task != c.task || rq.Doc != w.index || rq.Choice != r || rq.Context != ctx || rq.Continuation != w.conts[r] {
							t.Errorf("doc %d choice %d:\n got %+q\nwant %+q\n cont %q want %q", i, r, rq.Context, ctx, rq.Continuation, w.conts[r])
						}
					}
					if i < len(c.chars) && fmt.Sprint(doc.ChoiceChars) != fmt.Sprint(c.chars[i]) {
						t.Errorf("doc %d: choice lengths %v, want %v", i, doc.ChoiceChars, c.chars[i])
					}
				}
			})
		}
	}
}

// TestTaskDefaults: each task evaluates the split and uses the shots the
// harness and the papers name.
func TestTaskDefaults(t *testing.T) {
	want := map[string]string{
		"mmlu":          "test dev 5 first_n",
		"hellaswag":     "validation train 10 exclude acc_norm",
		"winogrande":    "validation train 5 exclude",
		"arc_challenge": "test train 25 acc_norm",
		"arc_easy":      "test train 0 acc_norm",
		"humaneval":     "test  0 generate",
	}
	for _, name := range taskNames {
		tk := tasks[name]
		got := fmt.Sprintf("%s %s %d", tk.EvalSplit, tk.FewshotSplit, tk.Shots)
		for _, f := range []struct {
			on   bool
			name string
		}{{tk.FirstN, "first_n"}, {tk.Exclude, "exclude"}, {tk.AccNorm, "acc_norm"}, {tk.Generate, "generate"}} {
			if f.on {
				got += " " + f.name
			}
		}
		if got != want[name] {
			t.Errorf("%s: %q, want %q", name, got, want[name])
		}
	}
}

// TestConvertedLayout: the hub's converted Parquet layout, one folder per
// split, reads as the files named by split do.
func TestConvertedLayout(t *testing.T) {
	dir := t.TempDir()
	for _, split := range []string{"test", "train"} {
		os.MkdirAll(filepath.Join(dir, split), 0o755)
		b, err := os.ReadFile(filepath.Join(testdata, "parquet", "arc_challenge", split+"-00000-of-00001.parquet"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, split, "0000.parquet"), string(b))
	}
	d, err := OpenDataset(dir)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := tasks["arc_challenge"].Build(context.Background(), d, BuildOptions{Shots: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[1].Requests[0].Context != arcShot0+arcShot2+"Question: What is 2 + 2?\nAnswer:" {
		t.Fatalf("%+v", docs)
	}
}

func TestTaskErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		writeFile(t, p, text)
		return filepath.Dir(p)
	}
	missing := write("a/validation.jsonl", `{"sentence": "x _ y", "option1": "a", "answer": "1"}`+"\n")
	noTrain := write("b/validation.jsonl", `{"sentence": "x _ y", "option1": "a", "option2": "b", "answer": "1"}`+"\n")
	badAns := write("c/validation.jsonl", `{"sentence": "x _ y", "option1": "a", "option2": "b", "answer": ""}`+"\n")
	noBlank := write("d/validation.jsonl", `{"sentence": "x y", "option1": "a", "option2": "b", "answer": "2"}`+"\n")
	badJSON := write("e/validation.jsonl", "{\"sentence\": \"x _ y\"}\nnot json\n")
	empty := write("f/readme.txt", "nothing")
	cases := []struct {
		task, path string
		shots      int
		want       string
	}{
		{"winogrande", missing, 0, `row 1: field "option2": missing (fields: answer, option1, sentence)`},
		{"winogrande", noTrain, 5, "has no train split"},
		{"winogrande", filepath.Join(noTrain, "validation.jsonl"), 5, "is one file: give the folder holding its train* files, or --num-fewshot 0"},
		{"winogrande", badAns, 0, `field "answer": "": want "1" or "2"`},
		{"winogrande", noBlank, 0, `field "sentence": has no blank`},
		{"winogrande", badJSON, 0, "validation.jsonl:2:"},
		{"arc_challenge", noTrain, 0, "has no test split (files named test*; it has: validation)"},
		{"mmlu", filepath.Join(testdata, "jsonl", "mmlu"), 3, `subject "high_school_biology" has 2 examples in the dev split, fewer than 3 shots`},
		{"arc_challenge", filepath.Join(testdata, "jsonl", "arc_challenge"), 25, "the train split has 3 rows, too few for 25-shot"},
		{"arc_challenge", empty, 0, "holds no data files named test*"},
		{"arc_challenge", testdata, 0, "point at one of its folders: jsonl, parquet"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			d, err := OpenDataset(c.path)
			if err == nil {
				_, err = tasks[c.task].Build(context.Background(), d, BuildOptions{Shots: c.shots})
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want %q", err, c.want)
			}
		})
	}
}

func TestPythonText(t *testing.T) {
	// Expected values are CPython 3.11's str.capitalize, str.strip and the
	// harness's hellaswag preprocess, worked out from their definitions.
	for _, c := range []struct{ fn, in, want string }{
		{"capitalize", "SHE puts It on the stove", "She puts it on the stove"},
		{"capitalize", "ßtraße", "Sstraße"},
		{"capitalize", "ǆemal", "ǅemal"},
		{"capitalize", "aΣ ΟΔΟΣ", "Aς οδος"},
		{"capitalize", "", ""},
		{"strip", "\x1c\t x \u3000\n", "x"},
		{"preprocess", "  a [title]b [header] c  ", "a. b c"},
		{"preprocess", "x [step] y", "x y"},
	} {
		var got string
		switch c.fn {
		case "capitalize":
			got = pyCapitalize(c.in)
		case "strip":
			got = pyStrip(c.in)
		case "preprocess":
			got = hellaswagPreprocess(c.in)
		}
		if got != c.want {
			t.Errorf("%s(%q) = %q, want %q", c.fn, c.in, got, c.want)
		}
	}
}
