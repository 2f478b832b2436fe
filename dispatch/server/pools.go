package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

func (s *Server) createPool(w http.ResponseWriter, r *http.Request, _ caller) error {
	var req api.CreatePoolRequest
	if err := body(r, &req, validate.CreatePool); err != nil {
		return err
	}
	p := api.Pool{Name: req.Name, Description: req.Description, CreatedAt: time.Now().UTC()}
	if err := s.st.CreatePool(r.Context(), p); err != nil {
		if errors.Is(err, store.ErrExists) {
			return errf(http.StatusConflict, "name", api.CodeExists, "pool %q already exists", req.Name)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request, _ caller) error {
	pools, err := s.st.ListPools(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.PoolList{Pools: pools})
	return nil
}

// poolsExist refuses pools that were never created, naming the field.
func (s *Server) poolsExist(ctx context.Context, field string, pools []string) error {
	for i, p := range pools {
		if _, err := s.st.Pool(ctx, p); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				f := field
				if len(pools) > 1 || field == "pools" {
					f = fmt.Sprintf("%s[%d]", field, i)
				}
				return errf(http.StatusUnprocessableEntity, f, "", "pool %q does not exist: create it first with `octo-worker pool create %s`", p, p)
			}
			return err
		}
	}
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, _ caller) error {
	var req api.CreateTokenRequest
	if err := body(r, &req, validate.CreateToken); err != nil {
		return err
	}
	if err := s.poolsExist(r.Context(), "pools", req.Pools); err != nil {
		return err
	}
	ttl := req.TTLSeconds
	if ttl == 0 {
		ttl = validate.DefaultTokenTTLSeconds
	}
	now := time.Now().UTC()
	secret := newToken(prefixRegistration)
	t := store.Token{ID: newID("tok-"), Hash: hashToken(secret), Pools: req.Pools, CreatedAt: now,
		ExpiresAt: now.Add(time.Duration(ttl) * time.Second)}
	if err := s.st.CreateToken(r.Context(), t); err != nil {
		return err
	}
	out := tokenOut(t)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func tokenOut(t store.Token) api.RegistrationToken {
	return api.RegistrationToken{ID: t.ID, Pools: t.Pools, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt}
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ caller) error {
	tokens, err := s.st.ListTokens(r.Context())
	if err != nil {
		return err
	}
	out := api.TokenList{Tokens: []api.RegistrationToken{}}
	for _, t := range tokens {
		out.Tokens = append(out.Tokens, tokenOut(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, _ caller) error {
	t, err := s.st.RevokeToken(r.Context(), r.PathValue("id"), time.Now().UTC())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tokenOut(t))
	return nil
}
