//go:build !linux

package main

import "errors"

// releaseStartupPages is Linux-only (MADV_PAGEOUT); elsewhere the pages stay.
func releaseStartupPages() (int64, error) { return 0, errors.New("not supported on this system") }
