namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>ssh's stderr as OpenSSH 9.2 prints it (captured on loopback, LC_ALL=C), classified.</summary>
public class SshErrorsTests
{
    private const string ChangedKey = """
        @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
        @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
        @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
        IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
        Someone could be eavesdropping on you right now (man-in-the-middle attack)!
        It is also possible that a host key has just been changed.
        The fingerprint for the ED25519 key sent by the remote host is
        SHA256:hoIieFGqq2KXtmtKwprZ1TQ3kxrpAIdULzGorLk43oo.
        Please contact your system administrator.
        Add correct host key in /root/.ssh/known_hosts to get rid of this message.
        Offending ED25519 key in /root/.ssh/known_hosts:1
          remove with:
          ssh-keygen -f "/root/.ssh/known_hosts" -R "[127.0.0.1]:2222"
        Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.
        Host key verification failed.

        """;

    [Theory]
    [InlineData("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n", ErrorIds.SshHostKeyUnknown)]
    [InlineData("Host key verification failed.\n", ErrorIds.SshHostKeyUnknown)]
    [InlineData(ChangedKey, ErrorIds.SshHostKeyChanged)]
    [InlineData("root@127.0.0.1: Permission denied (publickey).\n", ErrorIds.SshAuthenticationFailed)]
    [InlineData("backup@server: Permission denied (publickey,gssapi-keyex,gssapi-with-mic).\n", ErrorIds.SshAuthenticationFailed)]
    [InlineData("Received disconnect from 10.0.0.5 port 22:2: Too many authentication failures\n", ErrorIds.SshAuthenticationFailed)]
    [InlineData("ssh: Could not resolve hostname serverbackup: Name or service not known\n", ErrorIds.SshHostUnreachable)]
    [InlineData("ssh: connect to host 127.0.0.1 port 22998: Connection refused\n", ErrorIds.SshHostUnreachable)]
    [InlineData("ssh: connect to host 10.0.0.5 port 22: Connection timed out\n", ErrorIds.SshHostUnreachable)]
    [InlineData("ssh: connect to host 10.0.0.5 port 22: No route to host\n", ErrorIds.SshHostUnreachable)]
    [InlineData("ssh: connect to host 10.0.0.5 port 22: Network is unreachable\n", ErrorIds.SshHostUnreachable)]
    [InlineData("Connection timed out during banner exchange\nConnection to 10.255.255.1 port 22 timed out\n", ErrorIds.SshHostUnreachable)]
    [InlineData("kex_exchange_identification: read: Connection reset by peer\n", ErrorIds.SshHostUnreachable)]
    [InlineData("Connection to 127.0.0.1 closed by remote host.\n", ErrorIds.SshConnectionLost)]
    [InlineData("Connection closed by 127.0.0.1 port 2222\n", ErrorIds.SshConnectionLost)]
    [InlineData("Timeout, server 127.0.0.1 not responding.\n", ErrorIds.SshConnectionLost)]
    [InlineData("client_loop: send disconnect: Broken pipe\n", ErrorIds.SshConnectionLost)]
    [InlineData("Read from remote host server: Connection reset by peer\n", ErrorIds.SshConnectionLost)]
    [InlineData("subsystem request failed on channel 0\n", ErrorIds.SshFailed)]
    [InlineData("Bad owner or permissions on /root/.ssh/config\n", ErrorIds.SshFailed)]
    [InlineData("", ErrorIds.SshFailed)]
    public void Stderr_of_a_failed_ssh_gets_a_stable_id(string stderr, string errorId)
    {
        var error = SshErrors.Classify(stderr, "root@serverbackup");

        Assert.Equal(errorId, error.ErrorId);
        Assert.Equal("root@serverbackup", error.Target);
        Assert.Contains("root@serverbackup", error.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrWhiteSpace(error.RecommendedAction));
    }

    [Fact]
    public void An_unknown_key_names_the_host_as_ssh_saw_it_and_how_to_check_the_fingerprint()
    {
        var error = SshErrors.Classify("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.\n", "odakvm-unknown");

        Assert.Contains("[127.0.0.1]:2222", error.Message, StringComparison.Ordinal);
        Assert.Contains("never adds a key", error.Message, StringComparison.Ordinal);
        Assert.Contains("ssh-keyscan -p 2222 127.0.0.1 | ssh-keygen -lf -", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("'ssh odakvm-unknown' once", error.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public void A_changed_key_says_it_may_be_an_attack_and_gives_ssh_s_own_removal_command()
    {
        var error = SshErrors.Classify(ChangedKey, "odakvm-changed");

        Assert.Contains("SHA256:hoIieFGqq2KXtmtKwprZ1TQ3kxrpAIdULzGorLk43oo", error.Message, StringComparison.Ordinal);
        Assert.Contains("intercepting", error.Message, StringComparison.Ordinal);
        Assert.Contains("ssh-keygen -f \"/root/.ssh/known_hosts\" -R \"[127.0.0.1]:2222\"", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("never replaces a key", error.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public void Authentication_never_asks_for_a_password()
    {
        var error = SshErrors.Classify("root@127.0.0.1: Permission denied (publickey).\n", "root@server");

        Assert.Contains("never asks for a password", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("ssh-copy-id root@server", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("ssh-agent", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains("IdentityFile", error.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public void Other_failures_keep_ssh_s_own_words()
    {
        var error = SshErrors.Classify("Bad owner or permissions on /root/.ssh/config\n", "server");

        Assert.Contains("Bad owner or permissions on /root/.ssh/config", error.Message, StringComparison.Ordinal);
    }
}
