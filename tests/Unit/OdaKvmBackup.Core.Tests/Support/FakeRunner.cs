namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>One process the code under test asked to run.</summary>
internal sealed record Invocation(string Program, IReadOnlyList<string> Args, TimeSpan? Timeout = null)
{
    /// <summary>The virsh or qemu-img sub-command: dumpxml, blockcommit, info, commit...</summary>
    public string Command => Args.Count > 0 ? Args[0] : "";

    public bool Has(string argument) => Args.Contains(argument, StringComparer.Ordinal);

    /// <summary>The value after an option name, e.g. ValueOf("--domain").</summary>
    public string? ValueOf(string option)
    {
        for (var i = 0; i < Args.Count - 1; i++)
        {
            if (Args[i] == option)
                return Args[i + 1];
        }
        return null;
    }

    public bool Is(string program, string command) => Program == program && Command == command;

    public override string ToString() => CliWrapProcessRunner.FormatCommandLine(Program, Args);
}

/// <summary>An IProcessRunner that answers from a function and records every call.</summary>
internal sealed class FakeRunner : IProcessRunner
{
    private readonly Func<Invocation, CancellationToken, Task<ProcessResult>> _handler;
    private readonly List<Invocation> _calls = new();

    public FakeRunner(Func<Invocation, ProcessResult> handler) => _handler = (call, _) => Task.FromResult(handler(call));

    /// <summary>For processes that keep running (a virsh blockcommit waiting for its job): the token is the one the
    /// caller stops the process with; a handler that honours it ends as a killed process does, cancelled.</summary>
    public FakeRunner(Func<Invocation, CancellationToken, Task<ProcessResult>> handler) => _handler = handler;

    public IReadOnlyList<Invocation> Calls
    {
        get
        {
            lock (_calls)
                return _calls.ToList();
        }
    }

    /// <summary>The timeout is recorded with the call; a handler that wants to play a hung command throws what
    /// <see cref="CliWrapProcessRunner"/> throws then (<see cref="ToolTimeouts.TimedOut"/>).</summary>
    public async Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments,
        Action<string>? onStandardErrorLine = null, CancellationToken cancellationToken = default, TimeSpan? timeout = null)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var call = new Invocation(program, arguments.ToArray(), timeout);
        lock (_calls)
            _calls.Add(call);
        var result = await _handler(call, cancellationToken).ConfigureAwait(false);
        if (onStandardErrorLine is not null)
        {
            // CliWrap's delegate target splits on \r as well as \n, which is how virsh's progress arrives.
            foreach (var line in result.StandardError.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries))
                onStandardErrorLine(line);
        }
        return result;
    }
}

internal static class Results
{
    public static ProcessResult Ok(string stdout = "\n", string stderr = "") => new(0, stdout, stderr, TimeSpan.FromMilliseconds(20));

    /// <summary>A failed virsh command: stdout is a single newline, the reason is on stderr (lab.md section 6).</summary>
    public static ProcessResult VirshError(string stderr) => new(1, "\n", stderr, TimeSpan.FromMilliseconds(20));
}
