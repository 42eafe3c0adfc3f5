//go:build ignore

// gen writes the Parquet copies of the JSON lines test data in the column
// types the Hugging Face hub's Parquet files use:
//
//	go run testdata/eval/gen.go
package main

import (
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

func str(name string) arrow.Field {
	return arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true}
}

func strList(name string) arrow.Field {
	return arrow.Field{Name: name, Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true}
}

var schemas = map[string]*arrow.Schema{
	"hellaswag": arrow.NewSchema([]arrow.Field{{Name: "ind", Type: arrow.PrimitiveTypes.Int32, Nullable: true}, str("activity_label"),
		str("ctx_a"), str("ctx_b"), str("ctx"), strList("endings"), str("source_id"), str("split"), str("split_type"), str("label")}, nil),
	"winogrande": arrow.NewSchema([]arrow.Field{str("sentence"), str("option1"), str("option2"), str("answer")}, nil),
	"arc_challenge": arrow.NewSchema([]arrow.Field{str("id"), str("question"),
		{Name: "choices", Type: arrow.StructOf(strList("text"), strList("label")), Nullable: true}, str("answerKey")}, nil),
	"mmlu": arrow.NewSchema([]arrow.Field{str("question"), str("subject"), strList("choices"),
		{Name: "answer", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil),
	"humaneval": arrow.NewSchema([]arrow.Field{str("task_id"), str("prompt"), str("canonical_solution"), str("test"), str("entry_point")}, nil),
}

func main() {
	root := "testdata/eval"
	for task, sc := range schemas {
		files, _ := filepath.Glob(filepath.Join(root, "jsonl", task, "*.jsonl"))
		for _, in := range files {
			split := strings.TrimSuffix(filepath.Base(in), ".jsonl")
			out := filepath.Join(root, "parquet", task, split+"-00000-of-00001.parquet")
			if err := convert(in, out, sc); err != nil {
				log.Fatalf("%s: %v", in, err)
			}
		}
	}
}

func convert(in, out string, sc *arrow.Schema) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	rd := array.NewJSONReader(f, sc, array.WithChunk(-1))
	defer rd.Release()
	var recs []arrow.RecordBatch
	for rd.Next() {
		rec := rd.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
	}
	if err := rd.Err(); err != nil {
		return err
	}
	tbl := array.NewTableFromRecords(sc, recs)
	defer tbl.Release()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	o, err := os.Create(out)
	if err != nil {
		return err
	}
	// WriteTable closes the file.
	return pqarrow.WriteTable(tbl, o, 1024, nil, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
}
