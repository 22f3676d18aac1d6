using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Host;

/// <summary>What a native command printed and how it ended.</summary>
internal sealed record ProcessResult(int ExitCode, string StandardOutput, string StandardError, TimeSpan Duration);

/// <summary>Runs native programs. The only place in the project that starts processes.</summary>
internal interface IProcessRunner
{
    /// <summary>Runs <paramref name="program"/> with an argument array (never a shell string) and returns
    /// its result whatever the exit code; callers decide what a non-zero exit means. A process still running after
    /// <paramref name="timeout"/> is killed and reported as <see cref="ErrorIds.CommandTimedOut"/>: a wedged
    /// libvirtd must become an error, never a hang.</summary>
    Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments,
        Action<string>? onStandardErrorLine = null, CancellationToken cancellationToken = default, TimeSpan? timeout = null);
}
