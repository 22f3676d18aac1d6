using System.Text;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests.Remote;

public class SshClientTests
{
    private static SshClient Client(string destination, SshOptions? options = null, FakeRunner? runner = null)
    {
        runner ??= new FakeRunner(_ => Results.Ok());
        return new SshClient(SshDestination.Parse(destination), runner, new CliWrapProcessRunner(NullSink.Instance), options);
    }

    [Fact]
    public void Every_call_checks_host_keys_never_prompts_and_notices_a_dead_link()
    {
        var args = Client("root@backup:/b").SubsystemArguments("sftp");

        Assert.Equal(["-s", "--", "root@backup", "sftp"], args.TakeLast(4));
        var options = Options(args);
        Assert.Equal("yes", options["BatchMode"]);
        Assert.Equal("yes", options["StrictHostKeyChecking"]);
        Assert.Equal("no", options["UpdateHostKeys"]);
        Assert.Equal("20", options["ConnectTimeout"]);
        Assert.Equal("15", options["ServerAliveInterval"]);
        Assert.Equal("4", options["ServerAliveCountMax"]);
        Assert.Equal("no", options["RequestTTY"]);
        Assert.Equal("none", options["RemoteCommand"]);
        Assert.DoesNotContain("-F", args);
    }

    [Fact]
    public void Nothing_that_picks_the_server_the_login_or_the_key_is_set_so_ssh_config_decides()
    {
        var args = Client("backup:/b").ScriptArguments("true", []);

        var options = Options(args);
        foreach (var left in new[] { "Port", "User", "HostName", "IdentityFile", "IdentitiesOnly", "ProxyJump", "ProxyCommand", "UserKnownHostsFile", "IdentityAgent" })
            Assert.False(options.ContainsKey(left), $"{left} is set on the command line");
        Assert.DoesNotContain("-p", args);
        Assert.DoesNotContain("-l", args);
        Assert.DoesNotContain("-i", args);
    }

    [Fact]
    public void A_test_config_file_is_passed_with_F_first()
    {
        var args = Client("backup:/b", new SshOptions { ConfigFile = "/tmp/ssh_config" }).SubsystemArguments("sftp");

        Assert.Equal(["-F", "/tmp/ssh_config"], args.Take(2));
    }

    [Fact]
    public void A_script_is_one_remote_command_line_after_the_destination()
    {
        var args = Client("root@backup:/b").ScriptArguments("echo \"$1\"", ["a b"]);

        Assert.Equal(["--", "root@backup", "sh -c 'echo \"$1\"' sh 'a b'"], args.TakeLast(3));
    }

    public static TheoryData<string> AwkwardArguments() => new()
    {
        "plain", "with space", "it's", "\"double\"", "semi;colon", "$(touch /tmp/pwned)", "`id`", "$HOME", "back\\slash",
        "new\nline", "-leading-dash", "--", "", " ", "*", "ünïcødé", "tab\there", "'", "''", "a'b'c",
    };

    [Theory]
    [MemberData(nameof(AwkwardArguments))]
    public async Task The_remote_shell_hands_the_script_each_argument_exactly(string argument)
    {
        // What sshd does with the command line: the login shell runs it with -c. dash and bash must agree.
        var line = SshClient.RemoteCommandLine("printf '%s\\0' \"$@\"", [argument, "after"]);

        foreach (var shell in new[] { "/bin/sh", "/bin/bash" })
        {
            var result = await new CliWrapProcessRunner(NullSink.Instance).RunAsync(shell, ["-c", line]);

            Assert.Equal(0, result.ExitCode);
            Assert.Equal(argument + "\0after\0", result.StandardOutput);
        }
    }

    [Fact]
    public async Task A_script_that_fails_on_the_server_returns_its_exit_code_and_ssh_failures_are_classified()
    {
        var runner = new FakeRunner(call => call.Args[^1].Contains("exit 3", StringComparison.Ordinal)
            ? new ProcessResult(3, "", "script error", TimeSpan.Zero)
            : new ProcessResult(255, "", "ssh: connect to host backup port 22: Connection refused\r\n", TimeSpan.Zero));
        var client = Client("backup:/b", runner: runner);

        Assert.Equal(3, (await client.RunScriptAsync("exit 3", [], CancellationToken.None)).ExitCode);
        var error = await Assert.ThrowsAsync<BackupException>(() => client.RunScriptAsync("true", [], CancellationToken.None));
        Assert.Equal(ErrorIds.SshHostUnreachable, error.ErrorId);
        Assert.All(runner.Calls, call => Assert.Equal("ssh", call.Program));
    }

    /// <summary>The -o name=value pairs of an argument list.</summary>
    private static Dictionary<string, string> Options(IReadOnlyList<string> args)
    {
        var options = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < args.Count - 1; i++)
        {
            if (args[i] == "-o")
            {
                var pair = args[i + 1].Split('=', 2);
                Assert.False(options.ContainsKey(pair[0]), $"{pair[0]} is given twice");
                options[pair[0]] = pair[1];
            }
        }
        return options;
    }
}

public class DuplexProcessTests
{
    private readonly CliWrapProcessRunner _runner = new(NullSink.Instance);

    [Fact]
    public async Task Bytes_written_to_stdin_come_back_on_stdout_and_the_exit_code_is_returned()
    {
        await using var process = await _runner.StartDuplexAsync("cat", [], CancellationToken.None);
        var sent = Encoding.ASCII.GetBytes("hello duplex");

        await process.Input.WriteAsync(sent);
        await process.Input.FlushAsync();
        var received = new byte[sent.Length];
        await process.Output.ReadExactlyAsync(received);
        process.Input.Dispose();

        Assert.Equal(sent, received);
        Assert.Equal(0, await process.Output.ReadAsync(new byte[1]));
        Assert.Equal(0, await process.WaitForExitAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Stderr_is_collected_and_stdout_ends_when_the_process_exits()
    {
        await using var process = await _runner.StartDuplexAsync("sh", ["-c", "echo oops >&2; exit 3"], CancellationToken.None);

        Assert.Equal(0, await process.Output.ReadAsync(new byte[16]));
        Assert.Equal(3, await process.WaitForExitAsync(CancellationToken.None));
        Assert.Contains("oops", process.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Cancelling_the_start_token_kills_the_process()
    {
        using var cts = new CancellationTokenSource();
        await using var process = await _runner.StartDuplexAsync("sleep", ["60"], cts.Token);
        var started = DateTime.UtcNow;

        await cts.CancelAsync();

        Assert.Equal(0, await process.Output.ReadAsync(new byte[1]).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_program_that_is_not_there_is_ToolNotFound()
    {
        var error = await Assert.ThrowsAsync<BackupException>(() => _runner.StartDuplexAsync("no-such-program-odakvm", [], CancellationToken.None));

        Assert.Equal(ErrorIds.ToolNotFound, error.ErrorId);
    }
}
