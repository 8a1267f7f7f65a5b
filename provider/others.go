package provider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// azureDevOps: Azure DevOps Services (dev.azure.com/ORG,
// ORG.visualstudio.com) and Azure DevOps Server (https://HOST/COLLECTION).
// A personal access token goes as Basic auth with an empty user name.
func azureDevOps() *spec {
	return &spec{
		key: "azure-devops", name: "Azure DevOps", selfHosted: true,
		cloudHosts: []string{"dev.azure.com", ".visualstudio.com"},
		apiRoot:    underBase("/_apis/"),
		authorize: func(req *http.Request, cred string) {
			req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(":"+cred)))
		},
		identity:   azureIdentity,
		permission: probeAt("lists the projects the workflow reads", "projects?$top=1&api-version=6.0", nil),
		limited:    limit429("X-RateLimit-Reset"),
	}
}

// azureIdentity: GET _apis/connectionData names the authenticated user. An
// invalid PAT is not a 401 there: the service answers 203 with its HTML
// sign-in page.
func azureIdentity(ctx context.Context, r *run) bool {
	return r.identify(ctx, http.MethodGet, "connectionData", nil, func(a answer) bool {
		var cd struct {
			User *struct {
				Name string `json:"providerDisplayName"`
			} `json:"authenticatedUser"`
		}
		if a.status == http.StatusNonAuthoritativeInfo || !a.jsonBody(&cd) || cd.User == nil {
			return r.failWith(StepIdentity, verdict{code: CodeAuthFailed, auth: AuthFailed,
				detail: "Azure DevOps answered HTTP " + http.StatusText(a.status) + " with a sign-in page, not the user: the personal access token is not valid"})
		}
		return r.active(cd.User.Name)
	})
}

// youTrack: YouTrack Cloud (*.youtrack.cloud, *.myjetbrains.com/youtrack)
// and YouTrack Server; a permanent token is a bearer token.
func youTrack() *spec {
	return &spec{
		key: "youtrack", name: "YouTrack", selfHosted: true,
		cloudHosts: []string{".youtrack.cloud", ".myjetbrains.com"},
		apiRoot:    underBase("/api/"),
		identity:   whoAmI("users/me?fields=id,login,name", "login"),
		permission: probeAt("lists the projects the workflow reads", "admin/projects?fields=id,shortName&$top=1", nil),
	}
}

// asana: Asana's cloud API; a personal access token or OAuth token is a
// bearer token.
func asana() *spec {
	return &spec{
		key: "asana", name: "Asana",
		cloudHosts: []string{"app.asana.com"},
		apiRoot:    cloudRoot("https://app.asana.com/api/1.0/"),
		identity:   whoAmI("users/me", "data", "name"),
		permission: probeAt("sees a workspace", "workspaces?limit=1", func(a answer) *verdict {
			return emptyList(a, "data", "the credential sees no Asana workspace")
		}),
		// An OAuth access token past its hour says it expired.
		unauthorized: expiredIfSaid,
	}
}

// clickUp: ClickUp's cloud API; the token goes in Authorization as is.
func clickUp() *spec {
	return &spec{
		key: "clickup", name: "ClickUp",
		cloudHosts: []string{"api.clickup.com", "app.clickup.com"},
		apiRoot:    cloudRoot("https://api.clickup.com/api/v2/"),
		authorize:  rawToken,
		identity:   whoAmI("user", "user", "username"),
		permission: probeAt("has an authorized Workspace", "team", func(a answer) *verdict {
			return emptyList(a, "teams", "no ClickUp Workspace is authorized for this token")
		}),
		limited:      limit429("X-RateLimit-Reset"),
		unauthorized: clickUpUnauthorized,
	}
}

// clickUpUnauthorized reads the ECODE of ClickUp's 401: OAUTH_019, 021,
// 025 and 077 mean the token was revoked; 023, 026, 027 and 029 to 045
// that a Workspace was not authorized for it.
func clickUpUnauthorized(a answer) verdict {
	var e struct {
		Code string `json:"ECODE"`
	}
	a.jsonBody(&e)
	if slices.Contains([]string{"OAUTH_019", "OAUTH_021", "OAUTH_025", "OAUTH_077"}, e.Code) {
		return revokedAuth(a)
	}
	if n, ok := strings.CutPrefix(e.Code, "OAUTH_"); ok && (n == "023" || n == "026" || n == "027" || (n >= "029" && n <= "045")) {
		return noPermission(a)
	}
	return failedAuth(a)
}

// emptyList fails an answer whose list field is empty.
func emptyList(a answer, field, why string) *verdict {
	var body map[string]json.RawMessage
	var list []json.RawMessage
	if a.jsonBody(&body) && json.Unmarshal(body[field], &list) == nil && len(list) > 0 {
		return nil
	}
	return &verdict{code: CodePermissionMissing, detail: why}
}
