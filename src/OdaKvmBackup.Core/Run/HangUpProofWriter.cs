using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.Run;

/// <summary>A console writer whose writes are dropped, not thrown, once its terminal has hung up (then
/// <paramref name="hungUp"/> is true and <paramref name="detach"/> lets go of the terminal).</summary>
internal sealed class HangUpProofWriter(TextWriter inner, Func<bool> hungUp, Action detach) : TextWriter(inner.FormatProvider)
{
    public override System.Text.Encoding Encoding => inner.Encoding;

    [System.Diagnostics.CodeAnalysis.AllowNull]
    public override string NewLine
    {
        get => inner.NewLine;
        set => inner.NewLine = value;
    }

    public override void Write(char value) => Guard(() => inner.Write(value));

    public override void Write(string? value) => Guard(() => inner.Write(value));

    public override void Write(char[] buffer, int index, int count) => Guard(() => inner.Write(buffer, index, count));

    public override void Write(ReadOnlySpan<char> buffer)
    {
        var text = buffer.ToString();
        Guard(() => inner.Write(text));
    }

    public override void WriteLine() => Guard(inner.WriteLine);

    public override void WriteLine(string? value) => Guard(() => inner.WriteLine(value));

    public override void WriteLine(ReadOnlySpan<char> buffer)
    {
        var text = buffer.ToString();
        Guard(() => inner.WriteLine(text));
    }

    public override void Flush() => Guard(inner.Flush);

    private void Guard(Action write)
    {
        try
        {
            write();
        }
        catch (IOException) when (hungUp())
        {
            detach(); // the terminal is gone for good: write into nothing from now on
        }
    }
}
