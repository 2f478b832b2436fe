package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Packages lists the packages the server holds.
func (c *Client) Packages(ctx context.Context) ([]api.Package, error) {
	l, err := do[api.PackageList](ctx, c, retrySafe, "GET", "/api/v1/packages", nil)
	return l.Packages, err
}

// resumeAttempts is how many attempts in a row a push or a download makes without moving forward.
const resumeAttempts = 8

// resume runs step until it reports done. A step that fails is tried again after a growing pause (200 ms up
// to 5 s), unless it failed for good (a 4xx reply) or made no progress resumeAttempts times in a row.
func resume(ctx context.Context, step func() (done, progress bool, err error)) error {
	failed := 0
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		done, progress, err := step()
		if err == nil && done {
			return nil
		}
		if progress {
			failed, wait = 0, 200*time.Millisecond
		}
		if err != nil {
			if e, ok := asError(err); ok && e.Status < 500 && e.Body.Code != api.CodeUploadBusy && e.Body.Code != api.CodeOffsetMismatch && e.Status != http.StatusTooManyRequests {
				return err
			}
			if failed++; failed >= resumeAttempts {
				return fmt.Errorf("giving up after %d attempts without progress: %w", failed, err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// PushPackage uploads the file at path as package name@version (name defaults to the file's base name
// without its archive extension; version to the server's default) and returns it. The upload streams from
// the file and resumes from the server's offset after a broken connection; content the server holds already
// is not sent again.
func (c *Client) PushPackage(ctx context.Context, path, name, version string) (api.Package, error) {
	f, err := os.Open(path)
	if err != nil {
		return api.Package{}, fmt.Errorf("opening the package: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return api.Package{}, fmt.Errorf("reading the package %s: %w", path, err)
	}
	sha := hex.EncodeToString(h.Sum(nil))
	file := filepath.Base(path)
	if name == "" {
		name = file
		for _, ext := range []string{".tar.gz", ".tgz", ".tar", ".zip"} {
			if n, ok := strings.CutSuffix(file, ext); ok && n != "" {
				name = n
				break
			}
		}
	}
	u, err := do[api.Upload](ctx, c, retrySafe, "POST", "/api/v1/packages/uploads", api.UploadRequest{SHA256: sha, Size: size})
	if err != nil {
		return api.Package{}, err
	}
	err = resume(ctx, func() (bool, bool, error) {
		if u.Complete {
			return true, false, nil
		}
		before := u.Offset
		next, err := c.appendUpload(ctx, f, u)
		if err != nil {
			// Ask where the server stands: whatever arrived before the break is kept.
			if st, serr := do[api.Upload](ctx, c, retrySafe, "GET", "/api/v1/packages/uploads/"+sha, nil); serr == nil {
				u = st
			}
			return u.Complete, u.Offset > before, err
		}
		u = next
		return u.Complete, u.Offset > before, nil
	})
	if err != nil {
		return api.Package{}, fmt.Errorf("uploading %s: %w", path, err)
	}
	return do[api.Package](ctx, c, retrySafe, "POST", "/api/v1/packages",
		api.CreatePackageRequest{Name: name, Version: version, SHA256: sha, FileName: file})
}

// appendUpload sends the rest of the file from u.Offset in one streamed PATCH.
func (c *Client) appendUpload(ctx context.Context, f *os.File, u api.Upload) (api.Upload, error) {
	body := io.NewSectionReader(f, u.Offset, u.Size-u.Offset)
	req, err := http.NewRequestWithContext(ctx, "PATCH", c.url("/api/v1/packages/uploads/"+u.SHA256, nil), body)
	if err != nil {
		return u, err
	}
	req.ContentLength = u.Size - u.Offset
	if req.ContentLength == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	// The server refuses an append at the wrong offset (it may have kept more of a broken request than the
	// client knew) before reading its body: 100-continue keeps the client from sending the body for nothing.
	req.Header.Set("Expect", "100-continue")
	req.Header.Set(api.HeaderUploadOffset, strconv.FormatInt(u.Offset, 10))
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", c.agent)
	return decodeReply[api.Upload](c.rc.HTTPClient.Do(req))
}

func decodeReply[T any](resp *http.Response, err error) (T, error) {
	var out T
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return out, readError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("decoding the reply: %w", err)
	}
	return out, nil
}

// DownloadPackage writes the content of the operation's package sha256 (of size bytes) to w, in order. A
// broken connection resumes where it stopped (a Range request), so w sees every byte once.
func (p *Pod) DownloadPackage(ctx context.Context, sha string, size int64, w io.Writer) error {
	var got int64
	return resume(ctx, func() (bool, bool, error) {
		before := got
		err := p.downloadFrom(ctx, sha, got, size, w, &got)
		return err == nil, got > before, err
	})
}

func (p *Pod) downloadFrom(ctx context.Context, sha string, offset, size int64, w io.Writer, got *int64) error {
	req, err := http.NewRequestWithContext(ctx, "GET", p.c.url("/api/v1/pod/packages/"+sha, nil), nil)
	if err != nil {
		return err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	req.Header.Set("Authorization", "Bearer "+p.c.token)
	req.Header.Set("User-Agent", p.c.agent)
	resp, err := p.c.rc.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300:
		return readError(resp)
	case offset > 0 && resp.StatusCode != http.StatusPartialContent:
		return fmt.Errorf("the server ignored the range request (status %d): cannot resume", resp.StatusCode)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, size-offset))
	*got += n
	if err == nil && *got < size {
		err = fmt.Errorf("the download of sha256:%s stopped after %d of %d bytes: %w", sha, *got, size, io.ErrUnexpectedEOF)
	}
	if err != nil && errors.Is(err, context.Canceled) {
		return ctx.Err()
	}
	return err
}
