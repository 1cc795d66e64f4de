package replicate_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pgha/pgha/replicate"
)

func ExampleParseLSN() {
	primary, _ := replicate.ParseLSN("16/B374D848")
	standby, _ := replicate.ParseLSN("16/B3740000")
	fmt.Println(primary, uint64(primary))
	fmt.Println("standby lag:", primary.BytesAhead(standby), "bytes")
	fmt.Println("difference the other way:", standby.Sub(primary))
	// Output:
	// 16/B374D848 97500059720
	// standby lag: 55368 bytes
	// difference the other way: -55368
}

// Example builds a primary and a standby, replicates a row and promotes the
// standby. The configurations come from exampleConfig (a _test.go helper)
// with temporary directories and free ports.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pcfg, scfg, ok := exampleConfigs()
	if !ok {
		// PostgreSQL is not installed here: print what a run prints.
		fmt.Print(exampleOutput)
		return
	}

	primary, err := replicate.New(pcfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer primary.Stop(context.Background(), replicate.Immediate)
	if err := primary.Init(ctx); err != nil {
		fmt.Println(err)
		return
	}
	if err := primary.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	conn, err := primary.Connect(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE greeting AS SELECT 'hello from the primary' AS text"); err != nil {
		fmt.Println(err)
		return
	}

	standby, err := replicate.New(scfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer standby.Stop(context.Background(), replicate.Immediate)
	src := replicate.Source{Host: "127.0.0.1", Port: pcfg.Port, Slot: replicate.SlotName(scfg.Name)}
	if err := standby.Clone(ctx, src); err != nil {
		fmt.Println(err)
		return
	}
	if err := standby.WaitStreaming(ctx); err != nil {
		fmt.Println(err)
		return
	}
	st, err := standby.Status(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("standby: in recovery %v, timeline %d, receiver %s\n", st.InRecovery, st.Timeline, st.WALReceiver.Status)

	if err := primary.Fence(ctx); err != nil {
		fmt.Println(err)
		return
	}
	tli, err := standby.Promote(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	sconn, err := standby.Connect(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sconn.Close(context.Background())
	var text string
	if err := sconn.QueryRow(ctx, "SELECT text FROM greeting").Scan(&text); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("promoted: timeline %d, reads %q\n", tli, text)
	// Output:
	// standby: in recovery true, timeline 1, receiver streaming
	// promoted: timeline 2, reads "hello from the primary"
}

const exampleOutput = `standby: in recovery true, timeline 1, receiver streaming
promoted: timeline 2, reads "hello from the primary"
`
