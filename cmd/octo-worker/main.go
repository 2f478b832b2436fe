// Command octo-worker is the dispatch server, its CLI client, the Kubernetes worker agent, the in-pod script
// runner and the chart tooling, in one static binary. Everything is wired in app.go.
package main

import (
	"fmt"
	"os"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	stopProfile := startProfile(os.Args)
	err := newApp(version).Run(os.Args)
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "octo-worker:", escText(err.Error())) // it may carry the server's words
		os.Exit(exitCode(err))
	}
}
