using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Host;

/// <summary>CliWrap-based runner. LC_ALL=C keeps virsh and qemu-img messages in English, so they can be classified.</summary>
internal sealed partial class CliWrapProcessRunner : IProcessRunner
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
