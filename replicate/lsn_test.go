package replicate

import (
	"encoding/json"
	"testing"
)

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		wantErr bool
	}{
		{"0/0", 0, false},
		{"16/B374D848", 0x16_B374D848, false},
		{"16/b374d848", 0x16_B374D848, false},
		{"FFFFFFFF/FFFFFFFF", ^LSN(0), false},
		{"0/1", 1, false},
		{"1/0", 1 << 32, false},
		{"", 0, true},
		{"16", 0, true},
		{"/1", 0, true},
		{"1/", 0, true},
		{"1/2/3", 0, true},
		{"G/1", 0, true},
		{"100000000/0", 0, true},
		{"-1/0", 0, true},
		{" 1/0", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLSN(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLSN(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLSN(%q) = %#x, want %#x", tt.in, uint64(got), uint64(tt.want))
		}
	}
}

func TestLSNString(t *testing.T) {
	tests := []struct {
		in   LSN
		want string
	}{
		{0, "0/0"},
		{0x16_B374D848, "16/B374D848"},
		{0x1_00000000, "1/0"},
		{0xA, "0/A"},
		{^LSN(0), "FFFFFFFF/FFFFFFFF"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("LSN(%#x).String() = %q, want %q", uint64(tt.in), got, tt.want)
		}
		back, err := ParseLSN(tt.want)
		if err != nil || back != tt.in {
			t.Errorf("ParseLSN(%q) = %v, %v; want round trip to %#x", tt.want, back, err, uint64(tt.in))
		}
	}
}

func TestLSNDifference(t *testing.T) {
	a, b := LSN(0x1_00000010), LSN(0x0_FFFFFFF0)
	if got := a.Sub(b); got != 0x20 {
		t.Errorf("%v.Sub(%v) = %d, want 32", a, b, got)
	}
	if got := b.Sub(a); got != -0x20 {
		t.Errorf("%v.Sub(%v) = %d, want -32", b, a, got)
	}
	if got := a.BytesAhead(b); got != 0x20 {
		t.Errorf("%v.BytesAhead(%v) = %d, want 32", a, b, got)
	}
	if got := b.BytesAhead(a); got != 0 {
		t.Errorf("%v.BytesAhead(%v) = %d, want 0", b, a, got)
	}
	if got := a.BytesAhead(a); got != 0 {
		t.Errorf("%v.BytesAhead(itself) = %d, want 0", a, got)
	}
}

func TestLSNJSON(t *testing.T) {
	in := struct{ L LSN }{0x16_B374D848}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"L":"16/B374D848"}` {
		t.Fatalf("json.Marshal = %s, want {\"L\":\"16/B374D848\"}", b)
	}
	var out struct{ L LSN }
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("json.Unmarshal(%s) = %+v, %v; want %+v", b, out, err, in)
	}
	if err := json.Unmarshal([]byte(`{"L":"zz"}`), &out); err == nil {
		t.Fatal(`json.Unmarshal({"L":"zz"}) succeeded, want an error`)
	}
}
