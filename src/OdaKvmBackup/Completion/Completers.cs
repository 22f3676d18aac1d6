using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;

namespace OdaKvmBackup.Completion;

/// <summary>Tab completion of domain names: every defined domain, running ones first, quoted when needed.</summary>
public sealed class DomainNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var virsh = Completions.Virsh();
        var all = Completions.Ask(ct => virsh.ListAllDomainsAsync(ct));
        var running = Completions.Ask(ct => virsh.ListRunningDomainsAsync(ct)).ToHashSet(StringComparer.Ordinal);
        return Completions.Matching(all.OrderBy(d => running.Contains(d) ? 0 : 1).ThenBy(d => d, StringComparer.Ordinal), wordToComplete,
            d => running.Contains(d) ? $"{d} (running)" : $"{d} (shut off)");
    }
}

/// <summary>Tab completion of disk targets (vda, vdb ...) of the domain named by -DomainName.</summary>
public sealed class DiskTargetCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var domain = fakeBoundParameters["DomainName"] switch
        {
            string one => one,
            IEnumerable many => many.Cast<object>().Select(o => o?.ToString()).FirstOrDefault(),
            _ => null,
        };
        if (string.IsNullOrWhiteSpace(domain) || WildcardPattern.ContainsWildcardCharacters(domain))
            return [];
        var virsh = Completions.Virsh();
        var disks = Completions.Ask(async ct => (await virsh.DescribeAsync(domain, ct).ConfigureAwait(false)).Disks);
        return Completions.Matching(disks.Select(d => d.Target), wordToComplete,
            target => disks.First(d => d.Target == target) switch { var d => $"{target}: {d.Source} ({d.Format})" });
    }
}

internal static class Completions
{
    /// <summary>Completion must never hang the prompt: virsh gets a few seconds, then there is simply nothing.</summary>
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(5);

    public static VirshClient Virsh() => new(new CliWrapProcessRunner(NullSink.Instance));

    public static IReadOnlyList<T> Ask<T>(Func<CancellationToken, Task<IReadOnlyList<T>>> query)
    {
        using var limit = new CancellationTokenSource(Limit);
        try
        {
            return Task.Run(() => query(limit.Token)).GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is Core.BackupException or OperationCanceledException)
        {
            return [];
        }
    }

    public static IEnumerable<CompletionResult> Matching(IEnumerable<string> values, string word, Func<string, string> tooltip)
    {
        // What was typed is a prefix, not a pattern: "vm[" must not throw, and "vm[1]" must complete itself.
        var typed = WildcardPattern.Escape(word.Trim('\'', '"'));
        var pattern = new WildcardPattern(typed + "*", WildcardOptions.IgnoreCase);
        foreach (var value in values.Where(pattern.IsMatch))
            yield return new CompletionResult(Quote(value), value, CompletionResultType.ParameterValue, tooltip(value));
    }

    /// <summary>A value as it must be typed: single-quoted when it holds anything PowerShell would read otherwise.</summary>
    public static string Quote(string value) =>
        value.Length > 0 && value.All(c => char.IsLetterOrDigit(c) || c is '_' or '-' or '.') && !value.StartsWith('-')
            ? value
            : "'" + value.Replace("'", "''", StringComparison.Ordinal) + "'";
}
