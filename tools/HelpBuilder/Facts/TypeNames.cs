using System.Text;

namespace OdaKvmBackup.HelpBuilder.Facts;

/// <summary>Short type names as PlatyPS writes them: namespaces and generic arity dropped.</summary>
public static class TypeNames
{
    /// <summary>"System.String[]" → "String[]"; "System.Nullable`1[System.Int32]" → "Nullable[Int32]".</summary>
    public static string Short(string typeName)
    {
        var result = new StringBuilder();
        var identifier = new StringBuilder();
        bool inArity = false;
        foreach (char c in typeName)
        {
            switch (c)
            {
                case '.':
                    identifier.Clear();
                    break;
                case '`':
                    inArity = true;
                    break;
                case '[' or ']' or ',':
                    result.Append(identifier).Append(c);
                    identifier.Clear();
                    inArity = false;
                    break;
                default:
                    if (!inArity && !char.IsWhiteSpace(c)) identifier.Append(c);
                    break;
            }
        }
        return result.Append(identifier).ToString();
    }
}
