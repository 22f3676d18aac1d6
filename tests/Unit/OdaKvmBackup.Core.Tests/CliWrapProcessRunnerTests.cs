using System.Diagnostics;
using System.Globalization;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The real process runner with real processes: a wedged libvirtd must become an error, never a hang.</summary>
/// <remarks>In <see cref="EnvironmentCollection"/>: two of these tests set $env:ODAKVMBACKUP_TOOL_TIMEOUT_SEC, which
/// is process-wide. Run beside the other classes, a test of theirs whose process took more than a second while it was
/// set to 1 failed with CommandTimedOut (a loaded CI host).</remarks>
[Collection(EnvironmentCollection.Name)]
public sealed class CliWrapProcessRunnerTests
{
    private readonly CliWrapProcessRunner _runner = new(NullSink.Instance);

    /// <summary>A sleep that no other test or process runs: its argument is unique, so it can be looked for.</summary>
    private static string UniqueSeconds() => (30 + Random.Shared.Next(1, 999_999) / 1e7).ToString("0.0000000", CultureInfo.InvariantCulture);

    private static bool IsRunning(string program, string argument) =>
        Directory.EnumerateDirectories("/proc").Any(dir =>
        {
            try
            {
                return File.ReadAllText(Path.Combine(dir, "cmdline")) == program + "\0" + argument + "\0";
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                return false; // the process ended while we looked
            }
        });

    [Fact]
    public async Task Command_still_running_after_its_timeout_is_killed_and_reported_as_CommandTimedOut()
    {
        var seconds = UniqueSeconds();
        var clock = Stopwatch.StartNew();

        var ex = await Assert.ThrowsAsync<BackupException>(() =>
            _runner.RunAsync("sleep", [seconds], null, CancellationToken.None, TimeSpan.FromSeconds(1)));

        clock.Stop();
        Assert.Equal(ErrorIds.CommandTimedOut, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.OperationTimeout, ex.Category);
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
        Assert.Contains($"'sleep {seconds}' did not finish within 1 s", ex.Message, StringComparison.Ordinal);
        Assert.Contains("$env:ODAKVMBACKUP_TOOL_TIMEOUT_SEC", ex.FullMessage, StringComparison.Ordinal);
        Assert.Contains("Repair-KvmBackup", ex.RecommendedAction, StringComparison.Ordinal);
        Assert.False(IsRunning("sleep", seconds), "the timed-out process is still running");
    }

    [Fact]
    public async Task Without_a_timeout_of_its_own_a_command_gets_the_one_from_the_environment()
    {
        using var limit = new EnvironmentScope((ToolTimeouts.EnvironmentVariable, "1"));
        var clock = Stopwatch.StartNew();

        var ex = await Assert.ThrowsAsync<BackupException>(() => _runner.RunAsync("sleep", [UniqueSeconds()]));

        Assert.Equal(ErrorIds.CommandTimedOut, ex.ErrorId);
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
        Assert.Equal(TimeSpan.FromSeconds(1), ToolTimeouts.Default);
        Assert.Equal(TimeSpan.FromSeconds(100), ToolTimeouts.LongWork);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("-5")]
    [InlineData("ten")]
    public void Tool_timeout_is_300_seconds_unless_set_to_a_positive_number(string? value)
    {
        using var limit = new EnvironmentScope((ToolTimeouts.EnvironmentVariable, value));

        Assert.Equal(TimeSpan.FromSeconds(300), ToolTimeouts.Default);
    }

    [Fact]
    public async Task Cancellation_is_reported_as_cancelled_not_as_a_timeout()
    {
        var seconds = UniqueSeconds();
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var clock = Stopwatch.StartNew();

        var ex = await Record.ExceptionAsync(() => _runner.RunAsync("sleep", [seconds], null, cts.Token, TimeSpan.FromSeconds(20)));

        Assert.IsAssignableFrom<OperationCanceledException>(ex);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"stopping took {clock.Elapsed}");
        Assert.False(IsRunning("sleep", seconds), "the cancelled process is still running");
    }

    [Fact]
    public async Task Command_that_ends_in_time_returns_its_exit_code_and_output_in_English()
    {
        var result = await _runner.RunAsync("sh", ["-c", "echo \"$LC_ALL\"; echo oops >&2; exit 3"], null, CancellationToken.None, TimeSpan.FromSeconds(20));

        Assert.Equal(3, result.ExitCode);
        Assert.Equal("C\n", result.StandardOutput);
        Assert.Equal("oops\n", result.StandardError);
    }

    [Fact]
    public async Task Standard_error_lines_reach_the_caller_as_they_come()
    {
        var lines = new List<string>();

        await _runner.RunAsync("sh", ["-c", "printf 'Block commit: [ 50 %%]\\rBlock commit: [100 %%]\\n' >&2"], lines.Add, CancellationToken.None, TimeSpan.FromSeconds(20));

        Assert.Equal(["Block commit: [ 50 %]", "Block commit: [100 %]"], lines);
    }

    [Fact]
    public async Task Program_that_is_not_installed_is_ToolNotFound()
    {
        var ex = await Assert.ThrowsAsync<BackupException>(() => _runner.RunAsync("odakvmbackup-no-such-tool", [], null, CancellationToken.None, TimeSpan.FromSeconds(5)));

        Assert.Equal(ErrorIds.ToolNotFound, ex.ErrorId);
        Assert.Contains("odakvmbackup-no-such-tool", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Command_line_for_Verbose_can_be_pasted_into_a_shell()
    {
        Assert.Equal("virsh dumpxml --domain 'vm with spaces' --inactive",
            CliWrapProcessRunner.FormatCommandLine("virsh", ["dumpxml", "--domain", "vm with spaces", "--inactive"]));
        Assert.Equal("virsh list --name ''", CliWrapProcessRunner.FormatCommandLine("virsh", ["list", "--name", ""]));
        Assert.Equal("sh -c 'it'\\''s'", CliWrapProcessRunner.FormatCommandLine("sh", ["-c", "it's"]));
    }
}
