using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Processes;

/// <summary>What a native command printed and how it ended.</summary>
public sealed record ProcessResult(int ExitCode, string StandardOutput, string StandardError, TimeSpan Duration);

/// <summary>Runs native programs. The only place in the project that starts processes.</summary>
public interface IProcessRunner
{
    /// <summary>Runs <paramref name="program"/> with an argument array (never a shell string) and returns
    /// its result whatever the exit code; callers decide what a non-zero exit means. A process still running after
    /// <paramref name="timeout"/> is killed and reported as <see cref="ErrorIds.CommandTimedOut"/>: a wedged
    /// libvirtd must become an error, never a hang.</summary>
    Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments,
        Action<string>? onStandardErrorLine = null, CancellationToken cancellationToken = default, TimeSpan? timeout = null);
}

/// <summary>How long a native command may run. The default is generous (a healthy libvirtd answers in well under a
/// second) and can be set with $env:ODAKVMBACKUP_TOOL_TIMEOUT_SEC; commands that do long work get a multiple.</summary>
public static class ToolTimeouts
{
    public const string EnvironmentVariable = "ODAKVMBACKUP_TOOL_TIMEOUT_SEC";

    /// <summary>Any virsh or qemu-img call: 300 s unless set otherwise.</summary>
    public static TimeSpan Default =>
        int.TryParse(Environment.GetEnvironmentVariable(EnvironmentVariable), System.Globalization.NumberStyles.Integer,
            System.Globalization.CultureInfo.InvariantCulture, out var seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds) : TimeSpan.FromSeconds(300);

    /// <summary>Work that grows with the data (qemu-img commit of a shut-off domain's overlay): 100 times the default.</summary>
    public static TimeSpan LongWork => Default * 100;

    public static BackupException TimedOut(string commandLine, TimeSpan limit) =>
        new(ErrorIds.CommandTimedOut, BackupErrorCategory.OperationTimeout,
            $"'{commandLine}' did not finish within {limit.TotalSeconds:0} s and was stopped: libvirtd, QEMU or the guest agent may be hung.",
            $"Check that libvirtd answers (virsh list --all) and look at its log; then run Repair-KvmBackup if a backup was running. If the host is only slow, raise the limit: $env:{EnvironmentVariable} = 1200.");
}

/// <summary>Receives what an operation wants the user to see; the cmdlet shows it on the pipeline thread.</summary>
public interface IOperationSink
{
    void Verbose(string message);
    void Warning(string message);
    void Progress(ProgressUpdate update);
}

/// <summary>One progress report: an activity (one per domain) with a child per disk.</summary>
public sealed record ProgressUpdate(int Id, int? ParentId, string Activity, string Status, int PercentComplete, bool Completed = false);

/// <summary>A sink that drops everything, for callers that show nothing.</summary>
public sealed class NullSink : IOperationSink
{
    public static readonly NullSink Instance = new();
    public void Verbose(string message) { }
    public void Warning(string message) { }
    public void Progress(ProgressUpdate update) { }
}

/// <summary>CliWrap-based runner. LC_ALL=C keeps virsh and qemu-img messages in English, so they can be classified.</summary>
public sealed partial class CliWrapProcessRunner : IProcessRunner
{
    private readonly IOperationSink _sink;

    public CliWrapProcessRunner(IOperationSink sink) => _sink = sink;

    public async Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments,
        Action<string>? onStandardErrorLine = null, CancellationToken cancellationToken = default, TimeSpan? timeout = null)
    {
        _sink.Verbose("Running: " + FormatCommandLine(program, arguments));
        var limit = timeout ?? ToolTimeouts.Default;
        using var timer = new CancellationTokenSource(limit);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timer.Token);
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var stderrTarget = onStandardErrorLine is null
            ? PipeTarget.ToStringBuilder(stderr)
            : PipeTarget.Merge(PipeTarget.ToStringBuilder(stderr), PipeTarget.ToDelegate(onStandardErrorLine));
        var started = DateTime.UtcNow;
        try
        {
            var result = await Cli.Wrap(program)
                .WithArguments(arguments)
                .WithEnvironmentVariables(env => env.Set("LC_ALL", "C"))
                .WithStandardOutputPipe(PipeTarget.ToStringBuilder(stdout))
                .WithStandardErrorPipe(stderrTarget)
                .WithValidation(CommandResultValidation.None)
                .ExecuteAsync(stop.Token)
                .ConfigureAwait(false);
            return new ProcessResult(result.ExitCode, stdout.ToString(), stderr.ToString(), DateTime.UtcNow - started);
        }
        catch (OperationCanceledException) when (timer.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw ToolTimeouts.TimedOut(FormatCommandLine(program, arguments), limit);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new BackupException(ErrorIds.ToolNotFound, BackupErrorCategory.ObjectNotFound,
                $"Cannot run '{program}': {ex.Message}.",
                $"Install it (on Oracle Linux: the libvirt-client and qemu-img packages) and make sure it is on PATH.", program, ex);
        }
    }

    /// <summary>A copy-pastable rendering of an argument array, for -Verbose.</summary>
    public static string FormatCommandLine(string program, IEnumerable<string> arguments) =>
        string.Join(' ', new[] { program }.Concat(arguments).Select(QuoteForDisplay));

    private static string QuoteForDisplay(string argument) =>
        argument.Length > 0 && argument.All(c => char.IsLetterOrDigit(c) || "-_./:=,@%+".Contains(c))
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
