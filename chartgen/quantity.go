package chartgen

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Quantity is a Kubernetes resource quantity ("250m", "512Mi", "2"). Like Kubernetes, values files and --set
// may give it as a number (cpu: 1, --set requests.cpu=2): it keeps the number's text. Empty means unset.
type Quantity string

// UnmarshalJSON reads a quantity written as a string or as a number.
func (q *Quantity) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*q = Quantity(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("a quantity must be a string such as \"250m\" or a number, not %s", b)
	}
	*q = Quantity(n.String())
	return nil
}
