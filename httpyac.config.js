// httpyac's settings for tests/requests.http: the test command runs that file
// with httpyac (tests/requests_http.rs), and so can you (README, "Try it").
// Nothing here is used by the service.
//
// requests.http keeps to what VS Code REST Client, the JetBrains HTTP client
// and httpyac all understand, so what only one tool can do lives in that
// tool's settings: here, httpyac's.
module.exports = {
  environments: {
    // The variables requests.http leaves to each tool (its header says why).
    // httpyac keeps the answer of a `# @name x` request in the variable `x`,
    // so these chain by themselves. httpyac works them out before every
    // request and keeps the first value it gets; `undefined` (the request
    // has not run yet) leaves the variable to be worked out again, where a
    // thrown ReferenceError would also do it but print a stack trace.
    $shared: {
      access_token: '{{typeof login === "object" ? login.access_token : undefined}}',
      new_access_token:
        '{{typeof change_password === "object" ? change_password.access_token : undefined}}',
      user_id: '{{typeof login === "object" ? login.user.id : undefined}}',
      // The second device's session, which "End one session" ends.
      session_id:
        '{{typeof sessions === "object" ? sessions.find(session => !session.current).id : undefined}}',
      invitation_id: '{{typeof invitation === "object" ? invitation.id : undefined}}',
    },
  },
  configureHooks(api) {
    // Each request's `# @expect-status NNN` line (a comment to the other
    // tools) becomes a test: another status fails the run (exit code 20).
    // A request without one fails too, so a request added to the file
    // cannot go unchecked.
    api.hooks.onResponse.addHook('expectStatus', async (response, context) => {
      const test = api.utils.testFactoryAsync(context, { ignoreErrorFile: true });
      const expected = context.httpRegion.metaData.expectStatus;
      await test(`status == ${expected}`, () => {
        if (expected === undefined) {
          throw new Error('no "# @expect-status NNN" line for this request');
        }
        if (response.statusCode !== Number(expected)) {
          throw new Error(`status ${response.statusCode}, expected ${expected}`);
        }
      });
    });
  },
};
