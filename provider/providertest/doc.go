// Package providertest is the test kit of package provider: a fake server
// per provider that answers as that provider's public API documentation
// says, in the scenarios a provider check must tell apart (success with
// scopes, bad credential, revoked or expired token, missing scope,
// forbidden resource, rate limit with the provider's own headers), and a
// TLS certificate authority so the fakes can stand at the providers' real
// host names.
//
// A fake picks its scenario from the credential it is sent (see
// Credential), so one server plays every scenario. It is for tests only:
// it listens on loopback and keeps no state beyond what it saw.
package providertest
